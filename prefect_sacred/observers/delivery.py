"""``DeliveryWorker``: one observer's events, delivered in order by a thread of its own.

The rule an observer's events follow (written into ``RunObserver``'s contract): an event that
returned is delivered; one that raised is tried again, after a pause that doubles from
``retry_interval`` up to ``max_retry_interval``, while the backend is away. Events wait in
order behind it. Heartbeats waiting behind an outage (or a slow backend) are merged: the newer
carries the full state, and their output deltas are joined, so a backlog holds one
``captured_out`` at most. The run's ``QueueObserver`` and every run's observers use it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.observers.base import InvalidArtifactName, PendingEvent
from prefect_sacred.utils import redact

__all__ = ["Delivery", "DeliveryWorker", "delivering_for_journal", "describe_error"]

logger = logging.getLogger("prefect_sacred.delivery")

_journal_path: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "prefect_sacred_delivering_for_journal", default=None
)


def delivering_for_journal() -> str | None:
    """The journal directory of the run whose event this thread is delivering, if any.

    An observer that saves what it could not write (Mongo's failure file) keeps it there, with
    the rest of what the run still owes its backends.
    """
    return _journal_path.get()


def describe_error(exc: BaseException) -> str:
    """An exception in one line, credentials hidden, at most 300 characters."""
    return redact(f"{type(exc).__name__}: {exc}")[:300]


@dataclass(eq=False)
class Delivery:
    """One event waiting for (or done with) its observer."""

    event: PendingEvent
    #: The journal record it comes from (None: not journaled, e.g. ``join``).
    seq: int | None = None
    #: Tried once, never again (``join``).
    once: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    attempts: int = 0
    #: ``pending``, ``delivered``, ``refused`` (InvalidArtifactName) or ``abandoned``.
    state: str = "pending"
    refusal: InvalidArtifactName | None = None


class DeliveryWorker:
    """Delivers events to ``observer`` from a daemon thread, in order, retrying failures.

    Args:
        observer: Whose events these are (for names in messages).
        retry_interval: Seconds before the first retry of a failed event.
        max_retry_interval: The longest pause between retries (the pause doubles up to it).
        merge_after: A heartbeat queued this long (or while the backend fails) is merged
            into the next one; 0 merges whenever one waits.
        idle_interval: Seconds the idle thread sleeps between checks (events wake it at once).
        on_delivered: Called with each delivered (or refused) event, on the worker thread.
        on_failure: Called with each failed attempt and its exception, on the worker thread.
        log: Where outages are reported (once when they begin, once when they end).
    """

    def __init__(
        self,
        observer: Any,
        *,
        retry_interval: float = 0.2,
        max_retry_interval: float = 5.0,
        merge_after: float = 1.0,
        idle_interval: float = 20.0,
        on_delivered: Callable[[Delivery], None] | None = None,
        on_failure: Callable[[Delivery, Exception], None] | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.observer = observer
        self.name = type(observer).__name__
        self.retry_interval = retry_interval
        self.max_retry_interval = max(max_retry_interval, retry_interval)
        self.merge_after = merge_after
        self.idle_interval = idle_interval
        self.on_delivered = on_delivered
        self.on_failure = on_failure
        self.log = log or logger
        #: The run's journal directory, told to the observer during deliveries.
        self.journal_path: str | None = None
        self.events: deque[Delivery] = deque()
        #: Whether an event is being delivered right now (it stays first in ``events``).
        self.busy = False
        self.thread: threading.Thread | None = None
        #: The last failure, described (an exception would keep a beat's output alive).
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._condition = threading.Condition()
        self._stop = False

    # --- the caller's side --------------------------------------------------------------------

    def put(self, event: PendingEvent, seq: int | None = None, once: bool = False) -> Delivery:
        """Queue ``event`` (merging an older waiting heartbeat into it); returns its delivery."""
        delivery = Delivery(event, seq, once)
        with self._condition:
            if event.name == "heartbeat_event":
                delivery = self._merge_waiting_heartbeat(delivery)
            self.events.append(delivery)
            self._condition.notify_all()
        self.start()
        return delivery

    def _merge_waiting_heartbeat(self, newer: Delivery) -> Delivery:
        first = 1 if self.busy else 0  # the event being delivered stays
        now = time.monotonic()
        for index in range(len(self.events) - 1, first - 1, -1):
            older = self.events[index]
            if older.event.name != "heartbeat_event":
                continue
            if self.failing_since is None and now - older.queued_at < self.merge_after:
                return newer
            del self.events[index]
            return Delivery(merged_heartbeat(older.event, newer.event), newer.seq, queued_at=older.queued_at)
        return newer

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop`), in a copy of the caller's context."""
        with self._condition:
            self._stop = False
            if self.thread is not None and self.thread.is_alive():
                return
            context = contextvars.copy_context()
            self.thread = threading.Thread(
                target=context.run,
                args=(self._loop,),
                daemon=True,
                name=f"prefect-sacred-deliver-{self.name}",
            )
            self.thread.start()

    def wait_taken(self, delivery: Delivery, timeout: float) -> bool:
        """Wait until ``delivery`` is delivered, refused or failed once, or the backend is
        failing (it waits behind an outage); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while delivery.state == "pending" and delivery.attempts == 0 and self.failing_since is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.5))
        return True

    def wait_idle(self, deadline: float) -> bool:
        """Wait (until the ``time.monotonic()`` ``deadline``) for every event to be delivered."""
        with self._condition:
            self._condition.notify_all()
            while self.events or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.5))
        return True

    def stop(self, wait: float = 0.0) -> bool:
        """End the thread after the attempt in progress; waits up to ``wait`` s; True if ended."""
        with self._condition:
            self._stop = True
            self._condition.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)
        return thread is None or not thread.is_alive()

    def take_undelivered(self) -> list[Delivery]:
        """Remove and return the events still waiting (call after :meth:`stop`)."""
        with self._condition:
            left = list(self.events)
            self.events.clear()
        for delivery in left:
            delivery.state = "abandoned"
        return left

    # --- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        pause = self.retry_interval
        while True:
            with self._condition:
                while not self.events and not self._stop:
                    self._condition.wait(self.idle_interval)
                if self._stop:
                    return
                delivery = self.events[0]
                self.busy = True
            _journal_path.set(self.journal_path)  # this thread's own context
            try:
                delivery.event.deliver()
            except InvalidArtifactName as exc:  # the caller's mistake: retrying cannot help
                delivery.refusal = exc
                self._done(delivery, "refused")
                continue
            except Exception as exc:
                pause = self._failed(delivery, exc, pause)
                continue
            if self.failing_since is not None:
                self.log.warning(
                    "observer %s is back after %.0f s", self.name, time.monotonic() - self.failing_since
                )
                self.failing_since = None
            pause = self.retry_interval
            self._done(delivery, "delivered")
            # Waiting for the next event must not hold this one: its captured_out would make
            # the run copy its whole output on the next beat instead of appending in place.
            del delivery

    def _failed(self, delivery: Delivery, exc: Exception, pause: float) -> float:
        self.last_error = describe_error(exc)
        if self.on_failure is not None:
            self.on_failure(delivery, exc)
        if delivery.once:
            with self._condition:
                delivery.attempts += 1
            self._done(delivery, "delivered")
            return pause
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            self.log.warning(
                "observer %s could not take %s (%s); retrying",
                self.name,
                delivery.event.name,
                self.last_error,
            )
        with self._condition:
            delivery.attempts += 1
            self.busy = False
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._stop, pause)
        return min(pause * 2, self.max_retry_interval)

    def _done(self, delivery: Delivery, state: str) -> None:
        with self._condition:
            if self.events and self.events[0] is delivery:
                self.events.popleft()
            delivery.state = state
            self.busy = False
            self._condition.notify_all()
        if self.on_delivered is not None and state != "abandoned":
            try:
                self.on_delivered(delivery)
            except Exception:
                logger.exception("delivery callback failed")


def merged_heartbeat(older: PendingEvent, newer: PendingEvent) -> PendingEvent:
    """``newer`` heartbeat, with the output delta of both when both have one."""
    first, second = older.kwargs.get("output_delta"), newer.kwargs.get("output_delta")
    if first is None or second is None:
        return newer
    kwargs = {**newer.kwargs, "output_delta": first.then(second)}
    return PendingEvent(newer.name, newer.method, newer.args, kwargs)
