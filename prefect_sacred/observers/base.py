"""The observer interface: one no-op method per event of a run, exactly as Sacred defines it.

Events are always called with keyword arguments, so an observer written for Sacred (a subclass of
``sacred.observers.RunObserver`` or any object with these methods) plugs in unchanged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["InvalidArtifactName", "RunObserver"]


class InvalidArtifactName(ValueError):
    """An artifact name an observer refuses (it escapes the run or collides with a stored file).

    Unlike an outage, this is the caller's mistake: ``add_artifact`` raises it to the caller,
    after every other observer has received the artifact.
    """


class RunObserver:
    """Receives the events of a run. Subclass it and override the events you care about.

    Observers are called in descending ``priority``; the first id returned from ``queued_event``
    or ``started_event`` becomes the run's ``_id`` for every observer.

    Observers must survive pickling: Prefect's ``serve`` pickles the flow with its hooks, and so
    the experiment and its observers, into every flow-run process. Drop connections and locks in
    ``__getstate__`` and reconnect lazily.
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
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        """Periodic update: the live ``info`` dict, all captured output so far, the result."""

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
        """The run produced the file ``filename``, to be stored as ``name``."""

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        """New metric points since the last beat: ``{name: {steps, values, timestamps, name}}``."""

    def join(self) -> None:
        """Block until everything this observer accepted has been written."""

    # --- prefect-sacred additions: optional, observers written for Sacred need not have them ---

    def reattach(self, _id: Any) -> bool:
        """Prepare to record the final event of run ``_id`` that started in another process.

        Prefect runs cancellation and crash hooks of served runs in the serve process, which never
        saw the run start. Return True when the run is known and unfinished in this backend, so
        the final event should be sent; the default (False) means "I cannot resume runs".
        """
        return False

    def run_location(self) -> str | None:
        """Where the current run is stored, for people (a path, a URL without credentials)."""
        return None
