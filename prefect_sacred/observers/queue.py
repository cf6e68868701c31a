"""QueueObserver: any observer, written to from a background thread that outlasts outages.

Like Sacred's ``QueueObserver``, ``started_event`` (and ``queued_event``) run synchronously, so
the run gets its id and an unreachable backend fails the start; every later event is queued and
a background thread delivers it, retrying every ``retry_interval`` seconds while the backend is
away. Unlike Sacred's:

* the run never hangs at exit: ``join`` waits at most ``join_timeout`` seconds, then says what
  was not delivered and saves it to a file (the wrapped observer's ``dump_failure`` when it has
  one, else a JSON file of the events) -- nothing is dropped silently;
* failures are logged (once per outage, at WARNING) instead of at DEBUG;
* ``priority`` is the wrapped observer's, so ``QueuedMongoObserver`` still gives the run its id;
* a newer heartbeat replaces an undelivered one (each carries the full state), metric batches
  are all kept;
* ``log_metrics`` keeps Sacred's event signature ``(metrics_by_name, info)``, so any observer
  can be wrapped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.files import write_failure_file
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import redact

__all__ = ["QueueObserver", "QueuedMongoObserver", "UndeliveredEvents"]

logger = logging.getLogger("prefect_sacred.queue")

_FINAL = ("completed_event", "interrupted_event", "failed_event")


class UndeliveredEvents(RuntimeError):
    """``join`` gave up on events the backend did not take; the message says where they are."""


class QueueObserver(RunObserver):
    """Wraps ``covered_observer`` so its events are delivered by a background thread.

    Args:
        covered_observer: The observer doing the writing.
        interval: Seconds the idle thread sleeps between checks of the queue (events are
            delivered as soon as they arrive).
        retry_interval: Seconds between attempts while an event fails.
        join_timeout: The most seconds ``join`` (the end of the run) waits for the queue.
        failure_dir: Where undelivered events are saved when the wrapped observer cannot save
            them itself (default ``~/.prefect_sacred/queue_failures``).
    """

    def __init__(
        self,
        covered_observer: Any,
        interval: float = 20.0,
        retry_interval: float = 10.0,
        join_timeout: float = 30.0,
        failure_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._covered = covered_observer
        self.interval = interval
        self.retry_interval = retry_interval
        self.join_timeout = join_timeout
        self.failure_dir = str(failure_dir) if failure_dir is not None else None
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._condition = threading.Condition()
        self._busy = False
        self._stop = False
        self._worker: threading.Thread | None = None
        self.last_error: BaseException | None = None

    @property
    def covered_observer(self) -> Any:
        return self._covered

    @property
    def priority(self) -> int:
        """The wrapped observer's priority (Sacred's QueueObserver had 0, losing the run id)."""
        return int(getattr(self._covered, "priority", 0))

    @priority.setter
    def priority(self, value: int) -> None:
        self._covered.priority = value

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes QueueObserver lacks (Sacred's delegation, e.g. ``.runs``).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._covered, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueueObserver):
            return bool(self._covered == other._covered)
        return bool(self._covered == other)

    def __hash__(self) -> int:
        return hash(self._covered)

    def __copy__(self) -> QueueObserver:
        # A run that finds this instance busy gets a copy: it needs its own queue and thread.
        import copy

        return type(self)(
            copy.copy(self._covered), self.interval, self.retry_interval, self.join_timeout, self.failure_dir
        )

    # --- synchronous events -------------------------------------------------------------------

    def queued_event(self, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._covered.queued_event(**kwargs)

    def started_event(self, **kwargs: Any) -> Any:  # type: ignore[override]
        self._stop = False
        returned = self._covered.started_event(**kwargs)
        self._start_worker()
        return returned

    def reattach(self, _id: Any) -> bool:
        attach = getattr(self._covered, "reattach", None)
        if callable(attach) and attach(_id):
            self._stop = False
            self._start_worker()
            return True
        return False

    def run_location(self) -> str | None:
        describe = getattr(self._covered, "run_location", None)
        return describe() if callable(describe) else None

    # --- queued events ------------------------------------------------------------------------

    def heartbeat_event(self, info: dict[str, Any], captured_out: str, beat_time: Any, result: Any) -> None:
        self._put(
            "heartbeat_event",
            {"info": dict(info), "captured_out": captured_out, "beat_time": beat_time, "result": result},
        )

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        if metrics_by_name:
            self._put("log_metrics", {"metrics_by_name": metrics_by_name, "info": dict(info)})

    def resource_event(self, filename: str) -> None:
        self._put("resource_event", {"filename": filename})

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        self._put(
            "artifact_event",
            {"name": name, "filename": filename, "metadata": metadata, "content_type": content_type},
        )

    def completed_event(self, stop_time: Any, result: Any) -> None:
        self._put("completed_event", {"stop_time": stop_time, "result": result})

    def interrupted_event(self, interrupt_time: Any, status: str) -> None:
        self._put("interrupted_event", {"interrupt_time": interrupt_time, "status": status})

    def failed_event(self, fail_time: Any, fail_trace: list[str]) -> None:
        self._put("failed_event", {"fail_time": fail_time, "fail_trace": fail_trace})

    def join(self) -> None:
        """Wait for the queue to drain, at most ``join_timeout`` seconds; then save the rest.

        Raises:
            UndeliveredEvents: events were left; the message names the file holding them.
        """
        deadline = time.monotonic() + self.join_timeout
        with self._condition:
            self._condition.notify_all()
            while (self._events or self._busy) and time.monotonic() < deadline:
                self._condition.wait(min(0.5, max(deadline - time.monotonic(), 0.0)))
            left = len(self._events) + int(self._busy)
            self._stop = True
            self._condition.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            # An attempt in progress is bounded by the backend's own timeouts: wait for it a bit.
            worker.join(min(10.0, self.join_timeout + 1.0))
        self._worker = None
        if left:
            self._give_up()
        join = getattr(self._covered, "join", None)
        if callable(join):
            join()

    # --- the worker ---------------------------------------------------------------------------

    def _put(self, event: str, kwargs: dict[str, Any]) -> None:
        with self._condition:
            if event == "heartbeat_event" and self._events and self._events[-1][0] == "heartbeat_event":
                self._events[-1] = (event, kwargs)  # the newer beat carries everything the older had
            else:
                self._events.append((event, kwargs))
            self._condition.notify_all()
        if self._worker is None:
            self._start_worker()

    def _start_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        self._worker = threading.Thread(
            target=self._loop, daemon=True, name=f"prefect-sacred-queue-{type(self._covered).__name__}"
        )
        self._worker.start()

    def _loop(self) -> None:
        failing_since: float | None = None
        while True:
            with self._condition:
                while not self._events and not self._stop:
                    self._condition.wait(self.interval)
                if self._stop:
                    return
                event, kwargs = self._events[0]
                self._busy = True
            try:
                getattr(self._covered, event)(**kwargs)
            except Exception as exc:
                self.last_error = exc
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.warning(
                        "%s could not take %s (%s); retrying every %.0f s",
                        type(self._covered).__name__,
                        event,
                        redact(f"{type(exc).__name__}: {exc}")[:300],
                        self.retry_interval,
                    )
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
                    self._condition.wait_for(lambda: self._stop, self.retry_interval)
                continue
            if failing_since is not None:
                logger.warning(
                    "%s is back after %.0f s", type(self._covered).__name__, time.monotonic() - failing_since
                )
                failing_since = None
            with self._condition:
                if self._events and self._events[0][1] is kwargs:
                    self._events.popleft()
                self._busy = False
                self._condition.notify_all()

    def _give_up(self) -> None:
        with self._condition:
            events = list(self._events)
            self._events.clear()
        names = ", ".join(sorted({event for event, _ in events}))
        reason = (
            redact(f"{type(self.last_error).__name__}: {self.last_error}")[:300]
            if self.last_error
            else "timeout"
        )
        path = self._dump(events, reason)
        message = (
            f"{type(self._covered).__name__}: {len(events)} event(s) not delivered after "
            f"{self.join_timeout:.0f} s ({names}; last error: {reason}); saved to {path}"
        )
        logger.error("%s", message)
        raise UndeliveredEvents(message)

    def _dump(self, events: list[tuple[str, dict[str, Any]]], reason: str) -> str:
        dump_failure = getattr(self._covered, "dump_failure", None)
        worker_done = self._worker is None or not self._worker.is_alive()
        if callable(dump_failure) and worker_done and hasattr(self._covered, "_offline"):
            # Apply the undelivered events to the observer's state without writing, then let it
            # save that state whole (e.g. a Mongo run document with its final status).
            self._covered._offline = True
            try:
                for event, kwargs in events:
                    try:
                        getattr(self._covered, event)(**kwargs)
                    except Exception:
                        logger.debug("applying %s offline failed", event, exc_info=True)
                return str(dump_failure(reason))
            finally:
                self._covered._offline = False
        directory = self.failure_dir or os.path.join(
            os.path.expanduser("~"), ".prefect_sacred", "queue_failures"
        )
        record = {
            "observer": type(self._covered).__name__,
            "reason": reason,
            "events": [{"event": event, "kwargs": flatten(kwargs)} for event, kwargs in events],
        }
        return write_failure_file(directory, "queue_fail_", json.dumps(record, indent=1))


class QueuedMongoObserver(QueueObserver):
    """A MongoObserver written to from a background thread: the run goes on during outages.

    Events are retried every ``retry_interval`` seconds while MongoDB is away; at the end of the
    run the queue is given ``join_timeout`` seconds, then the run is saved to a file in
    ``failure_dir`` and the message says where. Unlike Sacred's, its priority is the
    MongoObserver's (30), so it still gives the run its numeric id.

    Args:
        interval: Seconds the idle background thread sleeps between checks of its queue.
        retry_interval: Seconds between attempts while MongoDB is away.
        url: As for :class:`MongoObserver`; likewise ``db_name``, ``collection``,
            ``overwrite``, ``priority``, ``client``, ``collection_prefix``, ``failure_dir``.
        db_name: The database holding the collections.
        collection: Sacred's deprecated name of the runs collection.
        overwrite: The ``_id`` of an existing run to record this run into.
        priority: Observers are called in descending priority.
        client: A ready ``pymongo.MongoClient``.
        join_timeout: The most seconds the end of the run waits for the queue.
        failure_dir: Where undelivered runs are saved.
        collection_prefix: ``p`` stores runs in ``p_runs`` and metrics in ``p_metrics``.
        **kwargs: Passed to :class:`MongoObserver` and on to ``pymongo.MongoClient``.
    """

    def __init__(
        self,
        interval: float = 20.0,
        retry_interval: float = 10.0,
        url: str | None = None,
        db_name: str = "sacred",
        collection: str = "runs",
        overwrite: int | str | None = None,
        priority: int = 30,
        client: Any = None,
        *,
        join_timeout: float = 30.0,
        failure_dir: str | os.PathLike[str] | None = None,
        collection_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        from prefect_sacred.observers.mongo import MongoObserver

        covered = MongoObserver(
            url=url,
            db_name=db_name,
            collection=collection,
            collection_prefix=collection_prefix,
            overwrite=overwrite,
            priority=priority,
            client=client,
            failure_dir=failure_dir,
            final_save_timeout=0.0,
            **kwargs,
        )
        # The queue retries and, when it gives up, has the observer save the whole run once.
        covered._dump_on_final_failure = False
        super().__init__(
            covered,
            interval=interval,
            retry_interval=retry_interval,
            join_timeout=join_timeout,
            failure_dir=failure_dir,
        )

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> QueuedMongoObserver:
        """Sacred's deprecated alias of the constructor."""
        return cls(*args, **kwargs)
