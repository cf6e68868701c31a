"""The observers of one run, and how each event reaches them (Sacred's contract, minus its drops).

Observers are called in descending priority with keyword arguments, one at a time under one
lock; the first id returned becomes ``_id`` for all. An observer that raises in
``started_event`` stops the run before the main function runs, named in the error. One that
raises later is logged with its name, counted in ``errors``, and keeps receiving events, so it
catches up when its backend comes back (Sacred silently drops it for the rest of the run).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prefect_sacred.observers.base import InvalidArtifactName, ObserverLike, OutputDelta, takes_output_delta
from prefect_sacred.utils import redact

__all__ = ["ObserverError", "ObserverFanout", "observer_name"]

logger = logging.getLogger("prefect_sacred")


class ObserverError(RuntimeError):
    """An observer could not record the start of a run, so the run does not start."""


def observer_name(observer: Any) -> str:
    return type(observer).__name__


class ObserverFanout:
    """Sends each event of one run to its observers, in order, one call at a time.

    Args:
        observers: The run's observers, in the order they were added.
        log: Where observer failures are reported (the run's Prefect logger).
    """

    def __init__(
        self, observers: Iterable[ObserverLike], log: logging.LoggerAdapter[Any] | None = None
    ) -> None:
        # sorted() is stable: equal priorities keep the order they were added in.
        self.observers = sorted(observers, key=lambda obs: -getattr(obs, "priority", 0))
        #: The observers that accepted the run; only they receive its later events.
        self.started: list[ObserverLike] = []
        #: Failures per observer name after the start.
        self.errors: dict[str, int] = {}
        self.log = log or logging.LoggerAdapter(logger, {})
        # The heartbeat thread and the main function both send events; observers never see two.
        self._lock = threading.RLock()
        self._with_delta: set[int] = set()

    @classmethod
    def resumed(
        cls, observers: Iterable[ObserverLike], run_id: Any, log: logging.LoggerAdapter[Any] | None = None
    ) -> ObserverFanout:
        """The observers that can finish run ``run_id``, started in a process now gone.

        Each is asked to ``reattach``; those that cannot (Sacred's observers, runs unknown or
        finished in their backend) are left out.
        """
        fanout = cls([], log)
        for observer in observers:
            reattach = getattr(observer, "reattach", None)
            try:
                if callable(reattach) and reattach(run_id):
                    fanout.started.append(observer)
            except Exception as exc:
                fanout.log.error(
                    "observer %s cannot resume run %s: %s", observer_name(observer), run_id, _describe(exc)
                )
        return fanout

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
        """Start the run on every observer; returns the run's id.

        Each observer gets its own copies of the run's data, so none sees another's changes.

        Raises:
            ObserverError: an observer failed; it and the observers after it did not start.
        """
        with self._lock:
            for observer in self.observers:
                try:
                    returned = observer.started_event(
                        ex_info=copy.deepcopy(ex_info),
                        command=command,
                        host_info=copy.deepcopy(host_info),
                        start_time=start_time,
                        config=copy.deepcopy(config),
                        meta_info=copy.deepcopy(meta_info),
                        _id=_id,
                    )
                except Exception as exc:
                    raise ObserverError(
                        f"observer {observer_name(observer)} failed to start the run: {_describe(exc)}"
                    ) from None
                self.started.append(observer)
                if takes_output_delta(observer):
                    self._with_delta.add(id(observer))
                if _id is None:
                    _id = returned
        return _id

    # --- during the run -------------------------------------------------------------------------

    def beat(
        self,
        *,
        metrics_by_name: dict[str, dict[str, list[Any]]],
        info: dict[str, Any],
        captured_out: str,
        output_delta: OutputDelta,
        beat_time: dt.datetime,
        result: Any,
    ) -> None:
        """One beat for every started observer: ``log_metrics``, then ``heartbeat_event``."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "log_metrics"):
                    observer.log_metrics(metrics_by_name=metrics_by_name, info=info)
                with self._guard(observer, "heartbeat_event"):
                    if id(observer) in self._with_delta:
                        observer.heartbeat_event(  # type: ignore[call-arg]
                            info=info,
                            captured_out=captured_out,
                            beat_time=beat_time,
                            result=result,
                            output_delta=output_delta,
                        )
                    else:
                        observer.heartbeat_event(
                            info=info, captured_out=captured_out, beat_time=beat_time, result=result
                        )

    def artifact_event(
        self, *, name: str, filename: str, metadata: dict[str, Any] | None, content_type: str | None
    ) -> None:
        """Store a file with the run in every observer.

        Raises:
            InvalidArtifactName: an observer refused the name (after all others got the file).
        """
        refused: InvalidArtifactName | None = None
        with self._lock:
            for observer in self.started:
                try:
                    with self._guard(observer, "artifact_event"):
                        observer.artifact_event(
                            name=name, filename=filename, metadata=metadata, content_type=content_type
                        )
                except InvalidArtifactName as exc:
                    refused = exc
        if refused is not None:
            raise refused

    def resource_event(self, *, filename: str) -> None:
        """Record an input file of the run in every observer."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "resource_event"):
                    observer.resource_event(filename=filename)

    # --- the end --------------------------------------------------------------------------------

    def completed_event(self, *, stop_time: dt.datetime, result: Any) -> None:
        """The main function returned."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "completed_event"):
                    observer.completed_event(stop_time=stop_time, result=result)

    def interrupted_event(self, *, interrupt_time: dt.datetime, status: str) -> None:
        """The run was stopped from outside."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "interrupted_event"):
                    observer.interrupted_event(interrupt_time=interrupt_time, status=status)

    def failed_event(self, *, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        """The run raised."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "failed_event"):
                    observer.failed_event(fail_time=fail_time, fail_trace=fail_trace)

    def join(self) -> None:
        """Wait for every observer to finish writing (each bounds its own wait)."""
        with self._lock:
            for observer in self.started:
                with self._guard(observer, "join"):
                    observer.join()

    def locations(self) -> list[tuple[str, str]]:
        """``(observer, where it stored this run)`` for every started observer that can tell."""
        found = []
        for observer in self.started:
            describe = getattr(observer, "run_location", None)
            location = describe() if callable(describe) else None
            if location:
                found.append((observer_name(observer), redact(str(location))))
        return found

    @contextlib.contextmanager
    def _guard(self, observer: ObserverLike, event: str) -> Iterator[None]:
        """Report an observer's exception with its name; the observer keeps receiving events."""
        try:
            yield
        except InvalidArtifactName:
            raise
        except Exception as exc:
            name = observer_name(observer)
            self.errors[name] = self.errors.get(name, 0) + 1
            self.log.error("observer %s failed in %s: %s", name, event, _describe(exc))
            logger.debug("traceback of the %s failure", name, exc_info=True)


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")
