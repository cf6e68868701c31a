"""The end events of observers that keep Sacred's ``run.json`` entry (FileStorage's layout).

FileStorage and the object stores write the same ``run.json``; they differ only in where it
goes. Each event sets the end fields Sacred's FileStorageObserver sets, then ``_finish``
writes the entry wherever the observer keeps it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.serialization import isoformat

__all__ = ["RunEntryObserver"]


class RunEntryObserver(RunObserver):
    """A :class:`RunObserver` whose run is the dict ``run_entry``, written out by ``_finish``."""

    run_entry: dict[str, Any]

    def _finish(self) -> None:
        """Write the ended ``run_entry`` (and whatever else the run's end completes)."""
        raise NotImplementedError

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self.run_entry.update(stop_time=isoformat(stop_time), result=result, status="COMPLETED")
        self._finish()

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self.run_entry.update(stop_time=isoformat(interrupt_time), status=status)
        self._finish()

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self.run_entry.update(stop_time=isoformat(fail_time), status="FAILED", fail_trace=fail_trace)
        self._finish()
