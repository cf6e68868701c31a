"""A run of an experiment: the object ``_run`` users see, and the observer event dispatch.

Event contract (Sacred's, minus its silent drops): observers are called in descending priority
with keyword arguments; the first id returned becomes ``_id`` for all. An observer that raises
in ``started_event`` fails the run before the main function runs, named in the error. One that
raises later is logged with its name, counted in ``Run.observer_errors``, and keeps receiving
events, so it catches up when its backend comes back.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

from prefect_sacred.flows.capture import Capture, start_capture
from prefect_sacred.flows.metrics import MetricsLogger
from prefect_sacred.observers.base import InvalidArtifactName
from prefect_sacred.serialization import utcnow
from prefect_sacred.tasks.heartbeat import Heartbeat
from prefect_sacred.utils import redact

__all__ = ["ObserverError", "Run", "current_run"]

logger = logging.getLogger("prefect_sacred")

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "prefect_sacred_current_run", default=None
)


class ObserverError(RuntimeError):
    """An observer could not record the start of a run, so the run does not start."""


def current_run() -> Run:
    """The run executing in this context (the main function, its tasks and threads it copies to).

    Raises:
        RuntimeError: outside a running experiment.
    """
    run = _current_run.get()
    if run is None:
        raise RuntimeError("no experiment run is active in this context")
    return run


def observer_name(observer: Any) -> str:
    return type(observer).__name__


class Run:
    """One execution of an experiment's main function, and what is known about it.

    Users reach it as the ``_run`` argument of the main function or with :func:`current_run`.
    """

    def __init__(
        self,
        *,
        experiment_info: dict[str, Any],
        host_info: dict[str, Any],
        meta_info: dict[str, Any],
        config: dict[str, Any],
        command: str,
        observers: list[Any],
        beat_interval: float = 10.0,
        capture_mode: str = "fd",
        captured_out_filter: Callable[[str], str] | None = None,
        _id: Any = None,
    ) -> None:
        self.experiment_info = experiment_info
        self.host_info = host_info
        self.meta_info = meta_info
        self.config = config
        self.command = command
        # sorted() is stable: equal priorities keep the order they were added in.
        self.observers = sorted(observers, key=lambda obs: -getattr(obs, "priority", 0))
        self.beat_interval = beat_interval
        self.capture_mode = capture_mode
        self.captured_out_filter = captured_out_filter
        self._id = _id
        self.info: dict[str, Any] = {}
        self.status: str | None = None
        self.start_time: Any = None
        self.stop_time: Any = None
        self.result: Any = None
        self._filtered_out = ""
        self.fail_trace: list[str] | None = None
        self.observer_errors: dict[str, int] = {}
        self.start_error: ObserverError | None = None
        self.exception: BaseException | None = None
        self.logger: logging.LoggerAdapter[Any] = logging.LoggerAdapter(logger, {})
        self._raw_out = ""
        self._metrics = MetricsLogger()
        self._started: list[Any] = []
        # Observers are never called concurrently (heartbeat thread vs. artifacts from the body).
        self._observer_lock = threading.RLock()
        self._finished = False
        self._capture: Capture | None = None
        self._heartbeat: Heartbeat | None = None
        #: Called once the final event was sent (the experiment releases the observers).
        self.on_finish: Callable[[Run], None] | None = None

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
        """Store the file ``filename`` with the run as ``name`` (default: its base name)."""
        path = self._existing_file(filename)
        self._emit_all(
            "artifact_event",
            name=name or os.path.basename(path),
            filename=path,
            metadata=metadata,
            content_type=content_type,
        )

    def add_resource(self, filename: str | os.PathLike[str]) -> None:
        """Record the file ``filename`` as an input of the run."""
        self._emit_all("resource_event", filename=self._existing_file(filename))

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
        with self._observer_lock:
            for observer in self.observers:
                try:
                    returned = observer.started_event(
                        ex_info=copy.deepcopy(self.experiment_info),
                        command=self.command,
                        host_info=copy.deepcopy(self.host_info),
                        start_time=self.start_time,
                        config=copy.deepcopy(self.config),
                        meta_info=copy.deepcopy(self.meta_info),
                        _id=self._id,
                    )
                except Exception as exc:
                    message = redact(f"{type(exc).__name__}: {exc}")
                    # A setup error found before start (start_error already set) is kept.
                    self.start_error = self.start_error or ObserverError(
                        f"observer {observer_name(observer)} failed to start the run: {message}"
                    )
                    break
                self._started.append(observer)
                if self._id is None:
                    self._id = returned
        if self.start_error is not None:
            self.logger.error("%s", self.start_error)
            return
        if self.beat_interval > 0:
            self._heartbeat = Heartbeat(self.beat_interval, self.beat)
            self._heartbeat.start()

    def bind_context(self) -> list[contextvars.Token[Any]]:
        """Make this run current (and its ``sys`` capture active) in the calling context."""
        tokens: list[contextvars.Token[Any]] = [_current_run.set(self)]
        if self._capture is not None and (token := self._capture.bind()) is not None:
            tokens.append(token)
        return tokens

    def beat(self) -> None:
        """Send new metrics and a heartbeat to every started observer."""
        with self._observer_lock:
            beat_time = utcnow()
            self._read_captured_output()
            metrics = self._metrics.drain()
            for observer in self._started:
                self._call(observer, "log_metrics", metrics_by_name=metrics, info=self.info)
                self._call(
                    observer,
                    "heartbeat_event",
                    info=self.info,
                    captured_out=self.captured_out,
                    beat_time=beat_time,
                    result=self.result,
                )

    def complete(self, result: Any) -> None:
        """The main function returned: final beat, then ``completed_event``."""
        self.result = result
        self._finish("COMPLETED", "completed_event", result=result)

    def fail(self, fail_trace: list[str]) -> None:
        """The main function raised: final beat, then ``failed_event``."""
        self.fail_trace = fail_trace
        self._finish("FAILED", "failed_event", fail_trace=fail_trace, time_key="fail_time")

    def interrupt(self, status: str = "INTERRUPTED") -> None:
        """The run was stopped from outside: final beat, then ``interrupted_event``."""
        self._finish(status, "interrupted_event", status=status, time_key="interrupt_time")

    def _finish(self, final_status: str, event: str, time_key: str = "stop_time", **kwargs: Any) -> None:
        with self._observer_lock:
            if self._finished:
                return
            self._finished = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._capture is not None:
            self._capture.stop()
        if self._started:
            self.beat()  # the final beat carries the tail of the output and the last metrics
        self.status = final_status
        self.stop_time = utcnow()
        with self._observer_lock:
            for observer in self._started:
                self._call(observer, event, **{time_key: self.stop_time}, **kwargs)
            for observer in self._started:
                self._call(observer, "join")
        for name, count in self.observer_errors.items():
            self.logger.warning("observer %s failed %d time(s) during run %s", name, count, self._id)
        if self.on_finish is not None:
            self.on_finish(self)

    @property
    def captured_out(self) -> str:
        """All output captured so far, through ``captured_out_filter`` if one is set."""
        return self._raw_out if self.captured_out_filter is None else self._filtered_out

    def _read_captured_output(self) -> None:
        if self._capture is None:
            return
        new = self._capture.read()
        if new:
            # Drop our reference first: a str with one reference grows in place, so a beat
            # costs what is new rather than a copy of the whole output.
            output, self._raw_out = self._raw_out, ""
            output += new
            self._raw_out = output
        if self.captured_out_filter is not None and (new or not self._filtered_out):
            self._filtered_out = self.captured_out_filter(self._raw_out)

    def _emit_all(self, event: str, **kwargs: Any) -> None:
        refused: InvalidArtifactName | None = None
        with self._observer_lock:
            for observer in self._started:
                try:
                    getattr(observer, event)(**kwargs)
                except InvalidArtifactName as exc:
                    refused = exc
                except Exception:
                    self._call_failed(observer, event)
        if refused is not None:
            raise refused

    def _call(self, observer: Any, event: str, **kwargs: Any) -> Any:
        try:
            return getattr(observer, event)(**kwargs)
        except Exception:
            self._call_failed(observer, event)
            return None

    def _call_failed(self, observer: Any, event: str) -> None:
        """Report the exception being handled; the observer keeps receiving events."""
        exc = sys.exc_info()[1]
        name = observer_name(observer)
        self.observer_errors[name] = self.observer_errors.get(name, 0) + 1
        self.logger.error("observer %s failed in %s: %s", name, event, redact(f"{type(exc).__name__}: {exc}"))
        logger.debug("traceback of the %s failure", name, exc_info=True)

    def locations(self) -> list[tuple[str, str]]:
        """``(observer, where it stored this run)`` for every started observer that can tell."""
        found = []
        for observer in self._started:
            describe = getattr(observer, "run_location", None)
            location = describe() if callable(describe) else None
            if location:
                found.append((observer_name(observer), redact(str(location))))
        return found


def format_fail_trace(exc: BaseException, skip_frames: int = 0) -> list[str]:
    """``traceback.format_exception`` of ``exc``, leaving out our own wrapper frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb)

