"""QueueObserver: any observer, written to from a background thread that outlasts outages.

Like Sacred's ``QueueObserver``, ``started_event`` (and ``queued_event``) run synchronously, so
the run gets its id and an unreachable backend fails the start; every later event is queued and
a background thread delivers it, retrying every ``retry_interval`` seconds while the backend is
away. Unlike Sacred's:

* the run never hangs at exit: ``join`` waits at most ``join_timeout`` seconds, then says what
  was not delivered and where it is kept (the wrapped observer's ``save_undelivered`` when it
  saves them, else a JSON file of the events): nothing is dropped silently;
* failures are logged (once per outage, at WARNING) instead of at DEBUG;
* ``priority`` is the wrapped observer's, so a queued observer still gives the run its id;
* a newer heartbeat replaces an undelivered one (each carries the full state), and their
  output deltas are merged, so an observer taking deltas still gets every character; the
  queue holds one heartbeat's ``captured_out`` at most, and only until it is delivered;
* events are forwarded with whatever arguments they came with, Sacred's tests' positional
  ones included; ``log_metrics`` keeps the event's signature ``(metrics_by_name, info)``.

Every run now delivers to each of its observers from a thread of its own, through the same
:class:`~prefect_sacred.observers.delivery.DeliveryWorker` (with a journal on disk behind it), so
wrapping is no longer needed to ride out outages; the wrapper stays for code that uses it, and
for its own ``join_timeout`` and failure files.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from prefect_sacred.observers.base import (
    ObserverLike,
    OutputDelta,
    PendingEvent,
    RunObserver,
    takes_output_delta,
)
from prefect_sacred.observers.delivery import DeliveryWorker
from prefect_sacred.observers.files import write_failure_file
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import redact

__all__ = ["QueueObserver", "UndeliveredEvents"]

logger = logging.getLogger("prefect_sacred.queue")


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
        covered_observer: ObserverLike,
        interval: float = 20.0,
        retry_interval: float = 10.0,
        join_timeout: float = 30.0,
        failure_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._covered_observer = covered_observer
        self.interval = interval
        self.retry_interval = retry_interval
        self.join_timeout = join_timeout
        self.failure_dir = str(failure_dir) if failure_dir is not None else None
        # The run's own delivery worker: in order, retried every retry_interval seconds, a
        # waiting heartbeat always merged into the next.
        self._delivery = DeliveryWorker(
            covered_observer,
            retry_interval=retry_interval,
            max_retry_interval=retry_interval,
            merge_after=0.0,
            idle_interval=interval,
            log=logger,
        )

    @property
    def last_error(self) -> str | None:
        """The last delivery failure, described (credentials hidden)."""
        return self._delivery.last_error

    @property
    def _worker(self) -> threading.Thread | None:
        # Sacred's tests look at the thread.
        return self._delivery.thread

    @property
    def _events(self) -> Any:
        return self._delivery.events

    @property
    def _busy(self) -> bool:
        return self._delivery.busy

    @property
    def covered_observer(self) -> ObserverLike:
        """The wrapped observer."""
        return self._covered_observer

    @property
    def priority(self) -> int:
        """The wrapped observer's priority (Sacred's QueueObserver had 0, losing the run id)."""
        return int(getattr(self._covered_observer, "priority", 0))

    @priority.setter
    def priority(self, value: int) -> None:
        self._covered_observer.priority = value

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes QueueObserver lacks (Sacred's delegation, e.g. ``.runs``).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._covered_observer, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueueObserver):
            return bool(self._covered_observer == other._covered_observer)
        return bool(self._covered_observer == other)

    def __hash__(self) -> int:
        return hash(self._covered_observer)

    def __copy__(self) -> QueueObserver:
        # A run that finds this instance busy gets a copy: it needs its own queue and thread.
        # Built with the queue's constructor, as a subclass's may connect (QueuedMongoObserver).
        new = type(self).__new__(type(self))
        QueueObserver.__init__(
            new, **{**self.__getstate__(), "covered_observer": copy.copy(self._covered_observer)}
        )
        return new

    def __getstate__(self) -> dict[str, Any]:
        return {
            "covered_observer": self._covered_observer,
            "interval": self.interval,
            "retry_interval": self.retry_interval,
            "join_timeout": self.join_timeout,
            "failure_dir": self.failure_dir,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        QueueObserver.__init__(self, **state)

    # --- synchronous events -------------------------------------------------------------------

    def queued_event(self, *args: Any, **kwargs: Any) -> Any:
        return self._covered_observer.queued_event(*args, **kwargs)

    def started_event(self, *args: Any, **kwargs: Any) -> Any:
        returned = self._covered_observer.started_event(*args, **kwargs)
        self._delivery.start()
        return returned

    def reattach(self, _id: Any) -> bool:
        attach = getattr(self._covered_observer, "reattach", None)
        if callable(attach) and attach(_id):
            self._delivery.start()
            return True
        return False

    def run_location(self) -> str | None:
        describe = getattr(self._covered_observer, "run_location", None)
        return describe() if callable(describe) else None

    # --- queued events ------------------------------------------------------------------------

    def heartbeat_event(self, *args: Any, output_delta: OutputDelta | None = None, **kwargs: Any) -> None:
        if "info" in kwargs:  # the run's live dict: keep it as it is now
            kwargs["info"] = dict(kwargs["info"])
        if output_delta is not None and takes_output_delta(self._covered_observer):
            kwargs["output_delta"] = output_delta
        self._put(PendingEvent("heartbeat_event", self._covered_observer.heartbeat_event, args, kwargs))

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        if "info" in kwargs:
            kwargs["info"] = dict(kwargs["info"])
        self._put(PendingEvent("log_metrics", self._covered_observer.log_metrics, args, kwargs))

    def resource_event(self, *args: Any, **kwargs: Any) -> None:
        self._put(PendingEvent("resource_event", self._covered_observer.resource_event, args, kwargs))

    def artifact_event(self, *args: Any, **kwargs: Any) -> None:
        self._put(PendingEvent("artifact_event", self._covered_observer.artifact_event, args, kwargs))

    def completed_event(self, *args: Any, **kwargs: Any) -> None:
        self._put(PendingEvent("completed_event", self._covered_observer.completed_event, args, kwargs))

    def interrupted_event(self, *args: Any, **kwargs: Any) -> None:
        self._put(PendingEvent("interrupted_event", self._covered_observer.interrupted_event, args, kwargs))

    def failed_event(self, *args: Any, **kwargs: Any) -> None:
        self._put(PendingEvent("failed_event", self._covered_observer.failed_event, args, kwargs))

    def join(self) -> None:
        """Wait for the queue to drain, at most ``join_timeout`` seconds; then save the rest.

        Raises:
            UndeliveredEvents: events were left; the message says where they are kept.
        """
        drained = self._delivery.wait_idle(time.monotonic() + self.join_timeout)
        # An attempt in progress is bounded by the backend's own timeouts: wait for it a bit.
        worker_done = self._delivery.stop(0.0 if drained else min(10.0, self.join_timeout + 1.0))
        left = [delivery.event for delivery in self._delivery.take_undelivered()]
        if left:
            self._give_up(left, worker_done)
        self._covered_observer.join()

    def _put(self, event: PendingEvent) -> None:
        self._delivery.put(event)

    def _give_up(self, events: list[PendingEvent], worker_done: bool) -> None:
        names = ", ".join(sorted({event.name for event in events}))
        reason = self.last_error or "timeout"
        where = None
        save = getattr(self._covered_observer, "save_undelivered", None)
        # Only once the worker stopped: the observer must not be called from two threads.
        if callable(save) and worker_done:
            try:
                where = save(events, reason)
            except Exception as exc:
                logger.warning("the observer could not save its undelivered events: %s", redact(str(exc)))
        if where is None:
            where = self._save_as_json(events, reason)
        message = (
            f"{type(self._covered_observer).__name__}: {len(events)} event(s) not delivered after "
            f"{self.join_timeout:.0f} s ({names}; last error: {reason}); saved to {where}"
        )
        logger.error("%s", message)
        raise UndeliveredEvents(message)

    def _save_as_json(self, events: Sequence[PendingEvent], reason: str) -> str:
        default = os.path.join(os.path.expanduser("~"), ".prefect_sacred", "queue_failures")
        directory = self.failure_dir or default
        record = {
            "observer": type(self._covered_observer).__name__,
            "reason": reason,
            "events": [
                {"event": event.name, "args": flatten(list(event.args)), "kwargs": flatten(event.kwargs)}
                for event in events
            ],
        }
        return write_failure_file(directory, "queue_fail_", json.dumps(record, indent=1))
