"""A run of an experiment: the object ``_run`` users see, its output, metrics and lifecycle.

Its observers receive its events through an :class:`~prefect_sacred.core.fanout.ObserverFanout`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any, Protocol

from prefect_sacred.core.capture import Capture, start_capture
from prefect_sacred.core.fanout import ObserverError, ObserverFanout
from prefect_sacred.core.heartbeat import Heartbeat
from prefect_sacred.core.journal import RunJournal, journal_enabled
from prefect_sacred.core.metrics import MetricsLogger, PointBatch
from prefect_sacred.core.records import encode_value
from prefect_sacred.observers.base import ObserverLike, OutputDelta, check_artifact_name
from prefect_sacred.serialization import utcnow


class BeatSignal(Protocol):
    """Tells the world outside the run's process that the run lives (see ``beat_events``)."""

    def beat(self, ended: bool = False) -> None: ...

    def close(self) -> None: ...


__all__ = ["ObserverError", "Run", "current_run"]

logger = logging.getLogger("prefect_sacred")

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "prefect_sacred_current_run", default=None
)


def current_run() -> Run:
    """The run executing in this context (the main function, its tasks and threads it copies to).

    Raises:
        RuntimeError: outside a running experiment.
    """
    run = _current_run.get()
    if run is None:
        raise RuntimeError("no experiment run is active in this context")
    return run


class Run:
    """One execution of an experiment's main function, and what is known about it.

    Users reach it as the ``_run`` argument of the main function or with :func:`current_run`.

    Unless the journal is off (``journal=False``, ``PREFECT_SACRED_JOURNAL=0``), a started run
    keeps a journal on local disk (see :mod:`prefect_sacred.core.journal`): its metric points and
    output every ``tick_interval`` seconds, and every event before an observer gets it. Each
    observer is delivered to by its own thread; the end waits at most ``join_timeout``
    seconds for all of them, then says what is left and where (``prefect-sacred sync``).
    """

    def __init__(
        self,
        *,
        experiment_info: dict[str, Any],
        host_info: dict[str, Any],
        meta_info: dict[str, Any],
        config: dict[str, Any],
        command: str,
        observers: list[ObserverLike],
        beat_interval: float = 10.0,
        capture_mode: str = "fd",
        captured_out_filter: Callable[[str], str] | None = None,
        _id: Any = None,
        join_timeout: float | None = None,
        journal: bool | None = None,
        tick_interval: float = 1.0,
        beat_events: Callable[[Run], BeatSignal | None] | None = None,
    ) -> None:
        self.experiment_info = experiment_info
        self.host_info = host_info
        self.meta_info = meta_info
        self.config = config
        self.command = command
        self.fanout = ObserverFanout(observers, join_timeout=join_timeout)
        #: Whether the run keeps a journal (default: unless ``PREFECT_SACRED_JOURNAL=0``).
        self.keep_journal = journal_enabled() if journal is None else journal
        #: How often metric points and output are written to the journal (seconds).
        self.tick_interval = tick_interval
        self.beat_interval = beat_interval
        self.capture_mode = capture_mode
        self.captured_out_filter = captured_out_filter
        self._id = _id
        self.info: dict[str, Any] = {}
        #: The config entries added, modified or changed in type by updates (``print_config``).
        self.config_modifications: Any = None
        self.status: str | None = None
        self.start_time: Any = None
        self.stop_time: Any = None
        self.result: Any = None
        self._filtered_out = ""
        self.fail_trace: list[str] | None = None
        self.start_error: ObserverError | None = None
        self.exception: BaseException | None = None
        self._raw_out = ""
        self._beat_raw_length = 0  # of _raw_out at the last beat
        self._unbeaten = PointBatch()  # points since the last beat, packed
        self._metrics = MetricsLogger()
        self._finish_lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._finished = False
        self._capture: Capture | None = None
        self._heartbeat: Heartbeat | None = None
        #: Builds, once the run started, what sends its beats beyond its process (the Prefect
        #: glue gives :func:`~prefect_sacred.flows.beat_events.beat_sender_for`).
        self.beat_events = beat_events
        self._beat_events: BeatSignal | None = None
        #: Called once the final event was sent (the experiment releases the observers).
        self.on_finish: Callable[[Run], None] | None = None

    @property
    def observers(self) -> list[ObserverLike]:
        """The run's observers, in the order they are called (descending priority)."""
        return self.fanout.observers

    @property
    def observer_errors(self) -> dict[str, int]:
        """How often each observer (by class name) failed after the run started."""
        return self.fanout.errors

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        """Where the run and its observers report (the flow run's Prefect logger once started)."""
        return self.fanout.log

    @logger.setter
    def logger(self, value: logging.LoggerAdapter[Any]) -> None:
        self.fanout.log = value

    # --- the user's API -------------------------------------------------------------------

    def log_scalar(self, name: str, value: Any, step: Any = None) -> None:
        """Record ``value`` of metric ``name`` at ``step`` (default: the metric's last step + 1)."""
        self._metrics.log_scalar(name, value, step)

    def add_artifact(
        self,
        filename: str | os.PathLike[str],
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Store the file ``filename`` with the run as ``name`` (default: its base name).

        ``name`` may contain ``/`` to store the artifact in a sub-directory of the run.

        Raises:
            InvalidArtifactName: ``name`` is empty, absolute or climbs out with ``..`` (no
                observer receives it), or an observer refused it (the others stored it).
            FileNotFoundError: ``filename`` does not exist.
        """
        path = self._existing_file(filename)
        name = check_artifact_name(os.path.basename(path) if name is None else name)
        self.fanout.artifact_event(name=name, filename=path, metadata=metadata, content_type=content_type)

    def add_resource(self, filename: str | os.PathLike[str]) -> None:
        """Record the file ``filename`` as an input of the run."""
        self.fanout.resource_event(filename=self._existing_file(filename))

    def open_resource(self, filename: str | os.PathLike[str], mode: str = "r") -> IO[Any]:
        """Open ``filename`` like :func:`open` and record it as an input of the run."""
        self.add_resource(filename)
        return open(filename, mode)

    @staticmethod
    def _existing_file(filename: str | os.PathLike[str]) -> str:
        path = os.path.abspath(filename)
        if os.path.isdir(path):
            raise IsADirectoryError(f"artifacts and resources are files, not directories: {path}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        return path

    # --- lifecycle, driven by the Prefect hooks --------------------------------------------

    def start(self) -> None:
        """Start capture, send ``started_event`` to every observer, start the heartbeat.

        An observer failure is kept in ``start_error`` (Prefect swallows exceptions raised in
        hooks); the flow body raises it before the main function runs.
        """
        self._capture = start_capture(self.capture_mode)
        self.start_time = utcnow()
        self.status = "RUNNING"
        try:
            self._id = self.fanout.started_event(
                ex_info=self.experiment_info,
                command=self.command,
                host_info=self.host_info,
                start_time=self.start_time,
                config=self.config,
                meta_info=self.meta_info,
                _id=self._id,
            )
        except ObserverError as exc:
            # A setup error found before the start (a bad deployment setting) is kept: the
            # observers that did start record the run failing with it.
            self.start_error = self.start_error or exc
        self.start_error = self.start_error or self.fanout.data_error
        if self.fanout.started and self.keep_journal:
            self._open_journal()
        if self.start_error is not None:
            self.logger.error("%s", self.start_error)
            return
        tick = self.tick if self.fanout.journal is not None else None
        if self.beat_interval > 0 or tick is not None:
            self._heartbeat = Heartbeat(
                self.beat_interval, self.beat, tick=tick, tick_interval=self.tick_interval
            )
            self._heartbeat.start()
        if self.beat_interval > 0 and self.beat_events is not None:  # for a watcher elsewhere
            self._beat_events = self.beat_events(self)

    def _open_journal(self) -> None:
        """Start the run's journal; without one (disk full...) the run goes on, and says so."""
        prefect_meta = self.meta_info.get("prefect") or {}
        flow_run_id = prefect_meta.get("flow_run_id") if isinstance(prefect_meta, dict) else None
        output_filter = self.captured_out_filter
        filter_path = (
            f"{output_filter.__module__}:{output_filter.__qualname__}"
            if output_filter is not None and "<" not in getattr(output_filter, "__qualname__", "<")
            else None
        )
        try:
            # A trial of a sweep (an experiment task) is keyed by its own task run.
            key = prefect_meta.get("task_run_id") if isinstance(prefect_meta, dict) else None
            journal = RunJournal.create(
                key or flow_run_id,
                {
                    "run_id": encode_value(self._id),
                    "flow_run_id": flow_run_id,
                    "experiment": self.experiment_info.get("name"),
                    "captured_out_filter": filter_path,
                },
            )
            self.fanout.keep_journal(journal)
        except Exception as exc:
            self.logger.warning("run %s keeps no journal: %s: %s", self._id, type(exc).__name__, exc)

    @property
    def journal_path(self) -> str | None:
        """The directory of the run's journal, while it has one."""
        return self.fanout.journal.path if self.fanout.journal is not None else None

    def bind_context(self) -> list[contextvars.Token[Any]]:
        """Make this run current (and its ``sys`` capture active) in the calling context."""
        tokens: list[contextvars.Token[Any]] = [_current_run.set(self)]
        if self._capture is not None and (token := self._capture.bind()) is not None:
            tokens.append(token)
        return tokens

    def tick(self) -> None:
        """Write the metric points and output captured since the last tick to the journal."""
        with self._beat_lock:
            self._take_points()
            self._take_output()

    def beat(self, beat_time: dt.datetime | None = None) -> None:
        """Send new metrics and a heartbeat (at ``beat_time``, default now) to every started observer."""
        if self._beat_events is not None:
            self._beat_events.beat()  # first: a slow backend must not make the run look dead
        with self._beat_lock:  # a late heartbeat and the final beat must not interleave
            beat_time = beat_time or utcnow()
            self._take_points()
            output_delta = self._read_captured_output()
            metrics, self._unbeaten = self._unbeaten, PointBatch()
            self.fanout.beat(
                metrics=metrics,
                info=self.info,
                captured_out=self.captured_out,
                output_delta=output_delta,
                beat_time=beat_time,
                result=self.result,
            )

    def _take_points(self) -> None:
        """Move the points logged since the last call into the journal and the next beat."""
        drained = self._metrics.drain()
        if not drained:
            return
        journal = self.fanout.journal
        if journal is not None:
            for part in drained.parts():  # a record per part: never all points as objects at once
                journal.add_points(part)
        self._unbeaten.extend(drained)

    def _take_output(self) -> None:
        """Append the output captured since the last call to ``_raw_out`` and the journal."""
        new = self._capture.read() if self._capture is not None else ""
        if not new:
            return
        # Drop our reference first: a str with one reference grows in place, so a beat
        # costs what is new rather than a copy of the whole output.
        output, self._raw_out = self._raw_out, ""
        output += new
        self._raw_out = output
        journal = self.fanout.journal
        if journal is not None:
            journal.add_output(new)

    def complete(self, result: Any) -> None:
        """The main function returned: final beat, then ``completed_event``."""
        self.result = result
        if self._stop("COMPLETED"):
            self.fanout.completed_event(stop_time=self.stop_time, result=result)
            self._ended()

    def fail(self, fail_trace: list[str]) -> None:
        """The main function raised: final beat, then ``failed_event``."""
        self.fail_trace = fail_trace
        if self._stop("FAILED"):
            self.fanout.failed_event(fail_time=self.stop_time, fail_trace=fail_trace)
            self._ended()

    def interrupt(self, status: str = "INTERRUPTED") -> None:
        """The run was stopped from outside: final beat, then ``interrupted_event``."""
        if self._stop(status):
            self.fanout.interrupted_event(interrupt_time=self.stop_time, status=status)
            self._ended()

    def _stop(self, final_status: str) -> bool:
        """Stop the heartbeat and capture and send the final beat; False if already stopped."""
        with self._finish_lock:
            if self._finished:
                return False
            self._finished = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._beat_events is not None:
            self._beat_events.close()
        if self._capture is not None:
            self._capture.stop()
        self.stop_time = self.stop_time or utcnow()  # set when the main function returned
        if self.fanout.started:
            # The final beat carries the tail of the output and the last metrics. It is dated
            # at the stop: Omniboard and Sacredboard take (last heartbeat - start) as the
            # duration, and Prefect runs the end hooks a second or so after the body.
            self.beat(beat_time=self.stop_time)
        self.status = final_status
        return True

    def _ended(self) -> None:
        """After the final event: ``join``, then say what went wrong and release the observers."""
        self.fanout.join()
        for name, count in self.observer_errors.items():
            self.logger.warning("observer %s failed %d time(s) during run %s", name, count, self._id)
        if self.on_finish is not None:
            self.on_finish(self)

    @property
    def captured_out(self) -> str:
        """All output captured so far, through ``captured_out_filter`` if one is set."""
        return self._raw_out if self.captured_out_filter is None else self._filtered_out

    def _read_captured_output(self) -> OutputDelta:
        """Take in the output captured since the last beat; return how ``captured_out`` changed."""
        shown = len(self.captured_out)
        since = self._beat_raw_length
        self._take_output()
        self._beat_raw_length = len(self._raw_out)
        if self.captured_out_filter is None:
            return OutputDelta(since, self._raw_out[since:])
        if len(self._raw_out) == since and self._filtered_out:
            return OutputDelta(shown, "")
        before, self._filtered_out = self._filtered_out, self.captured_out_filter(self._raw_out)
        start = common_prefix_length(before, self._filtered_out)
        return OutputDelta(start, self._filtered_out[start:])

    def locations(self) -> list[tuple[str, str]]:
        """``(observer, where it stored this run)`` for every started observer that can tell."""
        return self.fanout.locations()


def common_prefix_length(before: str, after: str, block: int = 1 << 16) -> int:
    """How many leading characters ``after`` shares with ``before``, compared block by block."""
    if after.startswith(before):
        return len(before)
    size = min(len(before), len(after))
    position = 0
    while position < size:
        end = min(position + block, size)
        if after.startswith(before[position:end], position):
            position = end
            continue
        while before[position] == after[position]:
            position += 1
        return position
    return size


def format_fail_trace(exc: BaseException, skip_frames: int = 0) -> list[str]:
    """``traceback.format_exception`` of ``exc``, leaving out our own wrapper frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb)
