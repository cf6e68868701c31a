"""The observer interface: one no-op method per event of a run, exactly as Sacred defines it.

Events are always called with keyword arguments, so an observer written for Sacred (a subclass of
``sacred.observers.RunObserver`` or any object with these methods) plugs in unchanged.
:class:`RunObserver` states the rules every observer can rely on and must honour;
``prefect_sacred.testing.ObserverContractSuite`` checks them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "InvalidArtifactName",
    "ObserverLike",
    "OutputDelta",
    "PendingEvent",
    "ResumedRun",
    "RunObserver",
    "check_artifact_name",
    "resumed_run",
    "resuming",
    "takes_output_delta",
]


class InvalidArtifactName(ValueError):
    """An artifact name an observer refuses (it escapes the run or collides with a stored file).

    Unlike an outage, this is the caller's mistake: ``add_artifact`` raises it to the caller,
    after every other observer has received the artifact.
    """


def check_artifact_name(name: str) -> str:
    """``name`` if every backend can store an artifact under it, else :class:`InvalidArtifactName`.

    The run checks each name before any observer sees it, so a name is refused the same way
    whichever observers record the run: not empty, not absolute, no ``..`` component, no NUL.
    """
    parts = name.replace("\\", "/").split("/")
    if not name or "\0" in name or name.startswith(("/", "\\")) or ".." in parts:
        raise InvalidArtifactName(
            f"artifact name {name!r} is not a relative path inside the run (no leading /, no '..')"
        )
    return name


@dataclass(frozen=True)
class OutputDelta:
    """How the captured output changed since the previous beat.

    The output now is the first ``start`` characters of the previous output followed by
    ``text``. Output that only grew has ``start`` equal to the previous length; a
    ``captured_out_filter`` that rewrote the end (a progress bar's ``\\r``) gives a smaller
    ``start``.
    """

    start: int
    text: str

    @property
    def end(self) -> int:
        """The length of the output after this change."""
        return self.start + len(self.text)

    def appended_to(self, stored: int) -> str | None:
        """What to append to output of which ``stored`` characters are stored.

        Returns None when appending is not enough: earlier characters changed, or some were
        never stored (a beat that failed). The caller then writes the whole ``captured_out``.
        """
        return self.text if self.start == stored else None

    def then(self, later: OutputDelta) -> OutputDelta:
        """One delta with the effect of this one followed by ``later``."""
        if later.start >= self.start:
            return OutputDelta(self.start, self.text[: later.start - self.start] + later.text)
        return later


@dataclass(frozen=True)
class PendingEvent:
    """An event a wrapper accepted but could not deliver: the bound method and its arguments."""

    #: The event's name, e.g. ``heartbeat_event`` (for messages and saved files).
    name: str
    method: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def deliver(self) -> Any:
        """Call the event now."""
        return self.method(*self.args, **self.kwargs)


@dataclass(frozen=True)
class ResumedRun:
    """What Prefect knows of a run being finished in another process than the one it ran in.

    The serve process (or a worker) that records a cancelled or killed run never saw it start;
    during ``reattach``, the final event and ``join`` there, :func:`resumed_run` gives this.
    """

    flow_name: str
    flow_run_id: str
    flow_run_name: str
    #: The flow run's page in the Prefect UI, when the UI's address is known.
    ui_url: str | None
    #: The flow run's parameters as Prefect stored them (JSON values).
    parameters: dict[str, Any]
    #: When the flow run started (naive UTC), if Prefect recorded it.
    start_time: dt.datetime | None


_resumed: contextvars.ContextVar[ResumedRun | None] = contextvars.ContextVar(
    "prefect_sacred_resumed_run", default=None
)


def resumed_run() -> ResumedRun | None:
    """The run being finished from another process, inside ``reattach`` and the events after it."""
    return _resumed.get()


@contextlib.contextmanager
def resuming(run: ResumedRun) -> Iterator[None]:
    """Make ``run`` what :func:`resumed_run` gives in this context (the hooks use it)."""
    token = _resumed.set(run)
    try:
        yield
    finally:
        _resumed.reset(token)


@runtime_checkable
class ObserverLike(Protocol):
    """Anything with Sacred's observer events: our :class:`RunObserver`, Sacred's, or a duck."""

    priority: int

    def queued_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any: ...

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any: ...

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None: ...

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None: ...

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None: ...

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None: ...

    def resource_event(self, filename: str) -> None: ...

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None: ...

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None: ...

    def join(self) -> None: ...


class RunObserver:
    """Receives the events of a run. Subclass it and override the events you care about.

    The rules below are what the run guarantees an observer and what it asks in return.
    ``prefect_sacred.testing.ObserverContractSuite`` runs real experiments against an observer
    and checks what it stored.

    **Order.** Observers are called in descending ``priority`` (ties keep the order they were
    added in), always with keyword arguments. For one run an observer sees:

    1. ``queued_event`` (only for a run created before it starts) and then, when it starts,
       ``started_event`` once, with the queued run's ``_id``. The first id an observer returns
       becomes the run's ``_id`` for every observer after it; an observer given an ``_id`` must
       use it.
    2. Any number of beats. A beat is ``log_metrics`` (the points since the previous beat, maybe
       none; more than 50,000 come in several calls of at most that many, in order) and then
       ``heartbeat_event``, so the metrics a heartbeat's ``info`` refers to are already stored.
       ``artifact_event`` and ``resource_event`` come between beats, when the main function
       calls them.
    3. A final beat, then exactly one of ``completed_event``, ``interrupted_event`` or
       ``failed_event``, then ``join``, which comes last and must return within a bounded time.

    A run whose process died is finished from another process (Prefect runs cancellation and
    crash hooks of served runs in the serve process): there a fresh observer gets ``reattach``
    and then only the final event and ``join``.

    **Threads.** ``started_event`` comes from the thread starting the flow run, synchronously.
    Every later event is written to the run's journal and then delivered by a thread of the
    observer's own (one per observer and run), in order, so a slow or dead backend delays no
    other observer, no heartbeat and not the end of the run (which waits at most
    ``join_timeout`` seconds for all observers together). The run never calls one observer
    concurrently, so an observer needs no lock of its own for its run. ``add_artifact`` waits
    until each observer took the file (or its backend is known to be failing).

    **State.** An instance records one run at a time. If a run starts while the instance is
    busy with another run in the same process, the new run gets a shallow copy
    (``copy.copy``). So keep per-run state in attributes that ``started_event``,
    ``queued_event`` and ``reattach`` assign afresh, never in containers created in
    ``__init__`` and changed in place: a copy shares those.

    **Arguments are the run's.** ``info`` is the run's live dict and ``captured_out`` the
    whole output so far: read them during the call, keep copies of what you need, and do not
    keep ``captured_out`` itself. The run appends new output to its string in place, which it
    can do only while no one else holds it; a reference kept past the call makes every later
    beat copy the whole output. An observer whose ``heartbeat_event`` declares a parameter
    named ``output_delta`` is also given an :class:`OutputDelta`, what changed since the
    previous beat, so storing the output costs what is new (see :meth:`heartbeat_event`).

    **Failures.** An exception from ``started_event`` or ``queued_event`` stops the run before
    the main function runs, with the observer named in the error. After the start, **an event
    that returned is delivered; an event that raised is delivered again**, after a pause that
    grows while the backend stays away, and the events after it wait in order (heartbeats
    waiting meanwhile are merged into the newest). So raise only when nothing of the event was
    stored, or make a repeated call harmless (a retried ``log_metrics`` must not store its
    points twice), and never swallow a failure you want retried. Each failure is counted in
    ``Run.observer_errors``; an outage is logged once when it begins and once when it ends.
    :class:`InvalidArtifactName` from ``artifact_event`` is the caller's mistake: not retried,
    raised to the caller. What is still undelivered when the run's time to end is up stays in
    the run's journal, and the run says so; ``prefect-sacred sync`` delivers it later.

    **Processes.** Prefect's ``serve`` pickles the flow with its hooks, and so the experiment and
    its observers, into every flow-run process. Drop connections and locks in ``__getstate__``
    and reconnect lazily. An observer that defines ``reattach`` is also pickled into the run's
    journal at the start, and rebuilt from there by ``prefect-sacred sync`` or by the process
    recording the end of a run whose process died: pickling must keep its configuration (where
    it stores runs), and ``reattach(_id)`` on the rebuilt instance must continue the run, so
    that the events it missed (beats, then the end) can follow.
    """

    priority: int = 0

    def queued_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        """A run was created but has not started yet. May return a candidate run id."""
        return None

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        """The run started. May return a candidate run id; an exception fails the run."""
        return None

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        """Periodic update: the live ``info`` dict, all captured output so far, the result.

        Args:
            info: The run's ``info`` dict (read it now; it keeps changing).
            captured_out: The whole captured output so far (do not keep it).
            beat_time: When the beat was taken (naive UTC).
            result: The result so far (``None`` until the main function returns).
            output_delta: What changed in ``captured_out`` since the previous beat. Given
                only to observers that declare this parameter; ``None`` when a caller sends
                the whole output only (Sacred's tests, a wrapper). Use
                ``output_delta.appended_to(characters_stored)`` and write ``captured_out`` whole
                when it returns None.
        """

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        """The main function returned ``result``."""

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        """The run was stopped from outside: ``status`` is ``INTERRUPTED`` or ``TIMEOUT``."""

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        """The run raised; ``fail_trace`` is ``traceback.format_exception`` output."""

    def resource_event(self, filename: str) -> None:
        """The run opened ``filename`` (an absolute path) as an input."""

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        """The run produced the file ``filename``, to be stored as ``name``.

        Raises:
            InvalidArtifactName: ``name`` escapes the run or would overwrite the observer's files.
        """

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        """New metric points since the last beat: ``{name: {steps, values, timestamps, name}}``."""

    def join(self) -> None:
        """Block until everything this observer accepted has been written, for a bounded time."""

    # --- prefect-sacred additions: optional, observers written for Sacred need not have them ---

    def reattach(self, _id: Any) -> bool:
        """Prepare to record the final event of run ``_id`` that started in another process.

        Prefect runs cancellation and crash hooks of served runs in the serve process, which never
        saw the run start. Return True when the run is known and unfinished in this backend, so
        the final event should be sent; the default (False) means "I cannot resume runs".
        ``_id`` is None for a run no observer gave an id (one recorded by notifiers only): a
        storage observer returns False for it. :func:`resumed_run` tells what Prefect knows of
        the run (its flow run, parameters, start time).
        """
        return False

    def run_location(self) -> str | None:
        """Where the current run is stored, for people (a path, a URL without credentials)."""
        return None

    def stored_point_counts(self) -> dict[str, int] | None:
        """How many points of each metric the backend holds for the current run (after ``reattach``).

        A write whose answer was lost may have been stored even though it raised. When the
        events a dead process could not confirm are delivered again (``prefect-sacred sync``, the
        end recorded from the serve process), the points this reports as stored are left out of
        the batches sent again, so none is stored twice. The default (None) means "I cannot
        tell": the batches are sent whole.
        """
        return None

    def save_undelivered(self, events: Sequence[PendingEvent], reason: str) -> str | None:
        """Keep events a wrapper could not deliver to this observer; return where they are.

        ``QueueObserver`` calls it when its time at the end of a run is up and the backend
        still refuses its events, after its worker stopped. An observer that can save the run
        better than a list of events (Mongo writes the run document as it would have stored
        it) does so here and returns the path. The default (None) lets the wrapper save the
        events as JSON itself.

        Args:
            events: The undelivered events, oldest first; ``event.deliver()`` calls one.
            reason: Why they were not delivered (credentials already hidden).
        """
        return None


def takes_output_delta(observer: Any) -> bool:
    """Whether ``observer.heartbeat_event`` declares an ``output_delta`` parameter."""
    try:
        return "output_delta" in inspect.signature(observer.heartbeat_event).parameters
    except (TypeError, ValueError, AttributeError):
        return False
