"""The observers of one run, and how each event reaches them (Sacred's contract, minus its drops).

``started_event`` is called synchronously, in descending priority; the first id returned becomes
``_id`` for all, and an observer that raises stops the run before the main function runs, named
in the error. Every later event is written to the run's journal first (when it has one), then
queued to each observer's own :class:`~prefect_sacred.observers.delivery.DeliveryWorker`, which
delivers in order and retries while the backend is away: a slow or dead backend never delays
another observer, the heartbeat, or the end of the run. :meth:`ObserverFanout.join` waits for
all of them at once, at most ``join_timeout`` seconds, then says per observer what was not
delivered and where it is kept.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.core.journal import RunJournal, pickled_observer
from prefect_sacred.core.metrics import PointBatch
from prefect_sacred.core.records import encode_time, encode_value
from prefect_sacred.observers.base import ObserverLike, OutputDelta, PendingEvent, takes_output_delta
from prefect_sacred.observers.delivery import Delivery, DeliveryWorker, describe_error
from prefect_sacred.utils import redact

__all__ = [
    "JOIN_TIMEOUT_ENV_VAR",
    "MetricsEvent",
    "ObserverError",
    "ObserverFanout",
    "RunDataError",
    "default_join_timeout",
    "observer_name",
]

logger = logging.getLogger("prefect_sacred")

#: Seconds the end of a run waits for its observers (default 30).
JOIN_TIMEOUT_ENV_VAR = "PREFECT_SACRED_JOIN_TIMEOUT"


@dataclass(frozen=True, eq=False)
class MetricsEvent(PendingEvent):
    """A beat's ``log_metrics``, its points packed until the observer's thread delivers them.

    Delivery builds Sacred's ``metrics_by_name`` a piece of at most ``CHUNK_POINTS`` points at a
    time and drops each piece once the observer took it, so a beat of a million points never
    exists as Python objects at once. A beat with more points than that gives them in several
    ``log_metrics`` calls, all before its ``heartbeat_event``; a retry resumes at the piece that
    failed, passing the same dict again (no piece is given twice once it returned).
    """

    pieces: Iterator[dict[str, dict[str, list[Any]]]] = field(default_factory=lambda: iter(()))
    #: The piece being delivered (kept across a retry), in a one-item list.
    current: list[dict[str, dict[str, list[Any]]]] = field(default_factory=list)

    @classmethod
    def of(cls, method: Callable[..., Any], metrics: PointBatch, info: dict[str, Any]) -> MetricsEvent:
        pieces = metrics.pieces() if len(metrics) else iter([{}])  # a beat without points: one call
        return cls("log_metrics", method, (), {"info": info}, pieces)

    def deliver(self) -> Any:
        while True:
            if not self.current:
                piece = next(self.pieces, None)
                if piece is None:
                    return None
                self.current.append(piece)
            self.method(metrics_by_name=self.current[0], **self.kwargs)
            self.current.clear()


class ObserverError(RuntimeError):
    """An observer could not record the start of a run, so the run does not start."""


class RunDataError(ObserverError):
    """The run's own data is at fault (a config value that cannot be copied), not an observer."""


def observer_name(observer: Any) -> str:
    return type(observer).__name__


def default_join_timeout() -> float:
    """``PREFECT_SACRED_JOIN_TIMEOUT`` seconds, else 30."""
    text = os.environ.get(JOIN_TIMEOUT_ENV_VAR, "").strip()
    try:
        return max(float(text), 0.0) if text else 30.0
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; using 30", JOIN_TIMEOUT_ENV_VAR, text)
        return 30.0


class ObserverFanout:
    """Sends each event of one run to its observers, each through its own delivery worker.

    Args:
        observers: The run's observers, in the order they were added.
        log: Where observer failures are reported (the run's Prefect logger).
        join_timeout: The most seconds :meth:`join` waits (default
            :func:`default_join_timeout`).
        retry_interval: Seconds before a failed event is first retried (the pause doubles up to
            ``max_retry_interval``).
        max_retry_interval: The longest pause between retries.
    """

    def __init__(
        self,
        observers: Iterable[ObserverLike],
        log: logging.LoggerAdapter[Any] | None = None,
        *,
        join_timeout: float | None = None,
        retry_interval: float = 0.2,
        max_retry_interval: float = 5.0,
    ) -> None:
        # sorted() is stable: equal priorities keep the order they were added in.
        self.observers = sorted(observers, key=lambda obs: -getattr(obs, "priority", 0))
        #: The observers that accepted the run; only they receive its later events.
        self.started: list[ObserverLike] = []
        #: Failures per observer name after the start.
        self.errors: dict[str, int] = {}
        self.log = log or logging.LoggerAdapter(logger, {})
        self.join_timeout = default_join_timeout() if join_timeout is None else join_timeout
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        #: Where events are written before delivery (None: the run keeps no journal).
        self.journal: RunJournal | None = None
        #: Set when the run's own data could not be handed to the observers as it is.
        self.data_error: RunDataError | None = None
        #: Per observer name, how many events ``join`` left undelivered.
        self.undelivered: dict[str, int] = {}
        self._workers: list[DeliveryWorker] = []
        self._end_recorded = False
        self._pickles: list[bytes | str] = []
        self._errors_lock = threading.Lock()
        self._with_delta: set[int] = set()

    @classmethod
    def resumed(
        cls,
        observers: Iterable[ObserverLike],
        run_id: Any,
        log: logging.LoggerAdapter[Any] | None = None,
        **options: Any,
    ) -> ObserverFanout:
        """The observers that can finish run ``run_id``, started in a process now gone.

        Each is asked to ``reattach``; those that cannot (Sacred's observers, runs unknown or
        finished in their backend) are left out.
        """
        fanout = cls([], log, **options)
        for observer in observers:
            reattach = getattr(observer, "reattach", None)
            try:
                if callable(reattach) and reattach(run_id):
                    fanout._add_started(observer)
            except Exception as exc:
                fanout.log.error(
                    "observer %s cannot resume run %s: %s",
                    observer_name(observer),
                    run_id,
                    describe_error(exc),
                )
        return fanout

    def _add_started(self, observer: ObserverLike) -> None:
        slot = len(self.started)
        self.started.append(observer)
        if takes_output_delta(observer):
            self._with_delta.add(id(observer))
        worker = DeliveryWorker(
            observer,
            retry_interval=self.retry_interval,
            max_retry_interval=self.max_retry_interval,
            on_delivered=lambda delivery: self._delivered(slot, delivery),
            on_failure=self._failed,
            log=self.log,
        )
        self._workers.append(worker)
        # Started here, so it delivers in a copy of this context (the flow run's, the resumed
        # run's), whichever thread sends the events.
        worker.start()

    # --- the start ------------------------------------------------------------------------------

    def started_event(
        self,
        *,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        """Start the run on every observer, synchronously; returns the run's id.

        Each observer gets its own copies of the run's data, so none sees another's changes. A
        value that cannot be copied is given as a marked repr and kept in ``data_error``.

        Raises:
            ObserverError: an observer failed; it and the observers after it did not start.
        """
        data = self._run_data(ex_info, host_info, config, meta_info)
        for observer in self.observers:
            # Pickled as configured, before the run gives it per-run state (the journal keeps
            # how to rebuild it).
            self._pickles.append(pickled_observer(observer))
            try:
                returned = observer.started_event(
                    **copy.deepcopy(data),
                    command=command,
                    start_time=start_time,
                    _id=_id,
                )
            except Exception as exc:
                logger.debug("traceback of the %s failure", observer_name(observer), exc_info=True)
                raise ObserverError(
                    f"observer {observer_name(observer)} failed to start the run: {describe_error(exc)}"
                ) from None
            self._add_started(observer)
            if _id is None:
                _id = returned
        return _id

    def queued_event(
        self,
        *,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        """Record a run that has not started as QUEUED on every observer; returns its id.

        Observers are asked in turn, as for ``started_event``, and the first id returned is the
        run's in the others. One that fails does not stop the others: its delivery worker gives
        it the event again, with the run's id, until it takes it or :meth:`join` gives up (then
        it is saved or reported like any other event left).
        """
        data = self._run_data(ex_info, host_info, config, meta_info)
        failed: list[tuple[ObserverLike, DeliveryWorker]] = []
        for observer in self.observers:
            self._add_started(observer)
            try:
                returned = observer.queued_event(
                    **copy.deepcopy(data),
                    command=command,
                    queue_time=queue_time,
                    _id=_id,
                )
            except Exception as exc:
                self.log.error(
                    "observer %s could not record the run QUEUED (tried again until the end): %s",
                    observer_name(observer),
                    describe_error(exc),
                )
                failed.append((observer, self._workers[-1]))
                continue
            if _id is None:
                _id = returned
        for observer, worker in failed:
            kwargs: dict[str, Any] = {**copy.deepcopy(data), "command": command, "queue_time": queue_time}
            kwargs["_id"] = _id
            worker.put(PendingEvent("queued_event", observer.queued_event, (), kwargs))
        return _id

    def _run_data(
        self,
        ex_info: dict[str, Any],
        host_info: dict[str, Any],
        config: dict[str, Any],
        meta_info: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        """The run's records for ``started_event``/``queued_event``, each copyable (see below)."""
        return {
            "ex_info": self._copyable(ex_info, "experiment info"),
            "host_info": self._copyable(host_info, "host info"),
            "config": self._copyable(config, "config"),
            "meta_info": self._copyable(meta_info, "meta info"),
        }

    def _copyable(self, values: dict[str, Any], what: str) -> dict[str, Any]:
        """``values``, with each entry that cannot be deep-copied replaced by a marked repr."""
        try:
            copy.deepcopy(values)
            return values
        except Exception:
            pass
        safe = {}
        for key, value in values.items():
            try:
                safe[key] = copy.deepcopy(value)
            except Exception as exc:
                try:
                    shown = repr(value)
                except Exception:
                    shown = f"<{type(value).__name__} object>"
                safe[key] = {"py/repr": shown}
                if self.data_error is None:
                    self.data_error = RunDataError(
                        f"{what} value {key!r} cannot be copied: {describe_error(exc)}"
                    )
        return safe

    def keep_journal(self, journal: RunJournal) -> None:
        """Write every later event to ``journal`` before delivering it; keep the observers there."""
        self.journal = journal
        journal.save_observers(self.started, self._pickles[: len(self.started)])
        for worker in self._workers:
            worker.journal_path = journal.path

    # --- during the run -------------------------------------------------------------------------

    def _record(self, event: str, /, **fields: Any) -> int | None:
        return self.journal.add_event(event, **fields) if self.journal is not None else None

    def _send(self, event: str, seq: int | None, /, **kwargs: Any) -> list[tuple[DeliveryWorker, Delivery]]:
        sent = []
        for observer, worker in zip(self.started, self._workers, strict=True):
            sent.append((worker, worker.put(PendingEvent(event, getattr(observer, event), (), kwargs), seq)))
        return sent

    def beat(
        self,
        *,
        metrics: PointBatch,
        info: dict[str, Any],
        captured_out: str,
        output_delta: OutputDelta,
        beat_time: dt.datetime,
        result: Any,
    ) -> None:
        """One beat for every started observer: ``log_metrics``, then ``heartbeat_event``.

        The metric points and output must be in the journal already (the run writes them).
        ``metrics`` stays packed until each observer's thread delivers it (see
        :class:`MetricsEvent`).
        """
        info = dict(info)  # delivered later: the run's live dict as it is now
        seq = self._record("log_metrics")
        for observer, worker in zip(self.started, self._workers, strict=True):
            worker.put(MetricsEvent.of(observer.log_metrics, metrics, info), seq)
        seq = self._record(
            "heartbeat_event",
            info=encode_value(info),
            beat_time=encode_time(beat_time),
            result=encode_value(result),
        )
        for observer, worker in zip(self.started, self._workers, strict=True):
            kwargs: dict[str, Any] = {
                "info": info,
                "captured_out": captured_out,
                "beat_time": beat_time,
                "result": result,
            }
            if id(observer) in self._with_delta:
                kwargs["output_delta"] = output_delta
            worker.put(PendingEvent("heartbeat_event", observer.heartbeat_event, (), kwargs), seq)

    def artifact_event(
        self, *, name: str, filename: str, metadata: dict[str, Any] | None, content_type: str | None
    ) -> None:
        """Store a file with the run in every observer; waits until each has taken it.

        The wait ends early for an observer whose backend is failing (the file is delivered
        when it is back) and at ``join_timeout`` at the latest.

        Raises:
            InvalidArtifactName: an observer refused the name (after all others got the file).
        """
        seq = self._record(
            "artifact_event",
            name=name,
            filename=filename,
            metadata=encode_value(metadata),
            content_type=content_type,
        )
        sent = self._send(
            "artifact_event", seq, name=name, filename=filename, metadata=metadata, content_type=content_type
        )
        deadline = time.monotonic() + self.join_timeout
        for worker, delivery in sent:
            worker.wait_taken(delivery, max(deadline - time.monotonic(), 0.0))
        for _, delivery in sent:
            if delivery.refusal is not None:
                raise delivery.refusal

    def resource_event(self, *, filename: str) -> None:
        """Record an input file of the run in every observer."""
        self._send("resource_event", self._record("resource_event", filename=filename), filename=filename)

    # --- the end --------------------------------------------------------------------------------

    def completed_event(self, *, stop_time: dt.datetime, result: Any) -> None:
        """The main function returned."""
        self._end_recorded = True
        seq = self._record("completed_event", stop_time=encode_time(stop_time), result=encode_value(result))
        self._send("completed_event", seq, stop_time=stop_time, result=result)

    def interrupted_event(self, *, interrupt_time: dt.datetime, status: str) -> None:
        """The run was stopped from outside."""
        self._end_recorded = True
        seq = self._record("interrupted_event", interrupt_time=encode_time(interrupt_time), status=status)
        self._send("interrupted_event", seq, interrupt_time=interrupt_time, status=status)

    def failed_event(self, *, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        """The run raised."""
        self._end_recorded = True
        seq = self._record("failed_event", fail_time=encode_time(fail_time), fail_trace=list(fail_trace))
        self._send("failed_event", seq, fail_time=fail_time, fail_trace=fail_trace)

    def join(self, timeout: float | None = None) -> dict[str, int]:
        """Give every observer its ``join``, and wait for all of them together.

        Waits at most ``timeout`` (default ``join_timeout``) seconds, then logs one line per
        observer that has events left: how many, which, and where they are kept. The journal
        is deleted when every observer received everything, kept otherwise.

        Returns:
            Per observer name, how many events were not delivered (empty: all were).
        """
        for observer, worker in zip(self.started, self._workers, strict=True):
            worker.put(PendingEvent("join", observer.join), once=True)
        deadline = time.monotonic() + (self.join_timeout if timeout is None else timeout)
        for worker in self._workers:
            worker.wait_idle(deadline)
        waited = self.join_timeout if timeout is None else timeout
        for worker in self._workers:
            if not (worker.events or worker.busy):
                worker.stop()
                continue
            # Without a journal the observer's own save is the last resort: give its thread a
            # moment to end the attempt in progress (never two calls at once to an observer).
            worker.stop(wait=0.0 if self.journal is not None else 1.0)
            left = [d for d in worker.take_undelivered() if d.event.name != "join"]
            if left:
                self.undelivered[worker.name] = self.undelivered.get(worker.name, 0) + len(left)
                self.log.error("%s", self._undelivered_line(worker, left, waited))
        if self.journal is not None:
            # Kept unless it is of no more use: the end recorded, and received by everyone.
            if self.undelivered or self.journal.broken or not self._end_recorded:
                self.journal.close()
            else:
                self.journal.delete()
        return dict(self.undelivered)

    def _undelivered_line(self, worker: DeliveryWorker, left: list[Delivery], waited: float) -> str:
        names = ", ".join(dict.fromkeys(delivery.event.name for delivery in left))
        reason = worker.last_error or "no answer"
        line = (
            f"observer {worker.name}: {len(left)} event(s) not delivered after {waited:.0f} s "
            f"({names}; last error: {reason})"
        )
        if self.journal is None:
            saved = self._save_undelivered(worker, left)
            if saved:
                return f"{line}; the run keeps no journal; saved by the observer to {redact(saved)}"
            return f"{line}; the run keeps no journal, so they are lost"
        where = self.journal.path
        return f"{line}; kept in the journal {where}: deliver them with `prefect-sacred sync {where}`"

    def _save_undelivered(self, worker: DeliveryWorker, left: list[Delivery]) -> str | None:
        """The observer's ``save_undelivered`` of ``left`` (a Mongo failure file...), when its
        thread has ended; None when it cannot save them (or is still inside a call)."""
        save = getattr(worker.observer, "save_undelivered", None)  # Sacred's observers lack it
        if save is None or (worker.thread is not None and worker.thread.is_alive()):
            return None
        try:
            saved = save([delivery.event for delivery in left], worker.last_error or "no answer")
        except Exception as exc:
            self.log.error("observer %s could not save what it missed: %s", worker.name, describe_error(exc))
            return None
        return str(saved) if saved else None

    def locations(self) -> list[tuple[str, str]]:
        """``(observer, where it stored this run)`` for every started observer that can tell."""
        found = []
        for observer in self.started:
            describe = getattr(observer, "run_location", None)
            location = describe() if callable(describe) else None
            if location:
                found.append((observer_name(observer), redact(str(location))))
        return found

    def _delivered(self, slot: int, delivery: Delivery) -> None:
        if self.journal is not None and delivery.seq is not None:
            self.journal.set_cursor(slot, delivery.seq)

    def _failed(self, delivery: Delivery, exc: Exception) -> None:
        name = observer_name(getattr(delivery.event.method, "__self__", None))
        with self._errors_lock:
            self.errors[name] = self.errors.get(name, 0) + 1
        if delivery.once:  # an outage is reported by the worker, once, when it begins
            self.log.error("observer %s failed in %s: %s", name, delivery.event.name, describe_error(exc))
        logger.debug("traceback of the %s failure", name, exc_info=exc)
