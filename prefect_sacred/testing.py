"""Test doubles for code that uses observers: an in-memory observer and a failing one.

Example:
    ```python
    from prefect_sacred.testing import InMemoryObserver

    observer = InMemoryObserver()
    ex.observers.append(observer)
    ex.run()
    assert observer.runs[-1]["status"] == "COMPLETED"
    ```
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from typing import Any

from prefect_sacred.observers.base import RunObserver

__all__ = ["FailingObserver", "InMemoryObserver"]


class InMemoryObserver(RunObserver):
    """Records every run as a dict in ``runs`` and every event, in order, in ``events``.

    Ids are increasing integers shared by all instances, like a database's.
    """

    _ids = itertools.count(1)

    def __init__(self, priority: int = 0) -> None:
        self.priority = priority
        # Copies made for overlapping runs share these lists but record into their own run.
        self.runs: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._current: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def run(self) -> dict[str, Any]:
        """The run this instance is recording (or recorded last)."""
        return self._current if self._current is not None else self.runs[-1]

    def _record(self, event: str, **kwargs: Any) -> None:
        with self._lock:
            self.events.append((event, kwargs))

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
        self._record("queued_event", _id=_id)
        _id = next(self._ids) if _id is None else _id
        self._current = {
            "_id": _id,
            "status": "QUEUED",
            "experiment": ex_info,
            "command": command,
            "host": host_info,
            "queue_time": queue_time,
            "config": config,
            "meta": meta_info,
        }
        self.runs.append(self._current)
        return _id

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
        self._record("started_event", _id=_id)
        queued = [
            run for run in self.runs if _id is not None and run["_id"] == _id and run["status"] == "QUEUED"
        ]
        _id = next(self._ids) if _id is None else _id
        entry = queued[0] if queued else {}
        entry.update(
            {
                "_id": _id,
                "status": "RUNNING",
                "experiment": ex_info,
                "command": command,
                "host": host_info,
                "start_time": start_time,
                "config": config,
                "meta": meta_info,
                "info": {},
                "captured_out": "",
                "heartbeat": None,
                "result": None,
                "metrics": {},
                "artifacts": [],
                "resources": [],
            }
        )
        if not queued:
            self.runs.append(entry)
        self._current = entry
        return _id

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        self._record("heartbeat_event", beat_time=beat_time)
        self.run.update(info=dict(info), captured_out=captured_out, heartbeat=beat_time, result=result)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        self._record("log_metrics", names=sorted(metrics_by_name))
        for name, metric in metrics_by_name.items():
            stored = self.run["metrics"].setdefault(name, {"steps": [], "values": [], "timestamps": []})
            for key in ("steps", "values", "timestamps"):
                stored[key].extend(metric[key])

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._record("completed_event", result=result)
        self.run.update(status="COMPLETED", stop_time=stop_time, result=result)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._record("interrupted_event", status=status)
        self.run.update(status=status, stop_time=interrupt_time)

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._record("failed_event", fail_trace=fail_trace)
        self.run.update(status="FAILED", stop_time=fail_time, fail_trace=fail_trace)

    def resource_event(self, filename: str) -> None:
        self._record("resource_event", filename=filename)
        self.run["resources"].append(filename)

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        self._record("artifact_event", name=name)
        with open(filename, "rb") as handle:
            self.run["artifacts"].append(
                {"name": name, "content": handle.read(), "metadata": metadata, "content_type": content_type}
            )

    def join(self) -> None:
        self._record("join")

    def run_location(self) -> str | None:
        return f"memory:{self.run['_id']}" if self.runs else None


class FailingObserver(InMemoryObserver):
    """Raises ``exc`` from the named events, optionally only after ``after`` successful calls.

    Args:
        events: Event names that fail, e.g. ``{"heartbeat_event"}``; default: all but ``join``.
        exc: The exception to raise.
        after: How many calls of those events succeed before the failures start.
        times: How many failures, then it recovers (None: fail forever).
    """

    _EVENTS = (
        "started_event",
        "queued_event",
        "heartbeat_event",
        "log_metrics",
        "completed_event",
        "interrupted_event",
        "failed_event",
        "resource_event",
        "artifact_event",
    )

    def __init__(
        self,
        events: set[str] | None = None,
        exc: Exception | None = None,
        after: int = 0,
        times: int | None = None,
        priority: int = 0,
    ) -> None:
        super().__init__(priority)
        self.failing = set(events or self._EVENTS)
        self.exc = exc or ConnectionError("backend unavailable")
        self.after = after
        self.times = times
        self.failures = 0
        self._calls = 0

    def _record(self, event: str, **kwargs: Any) -> None:
        if event in self.failing:
            self._calls += 1
            if self._calls > self.after and (self.times is None or self.failures < self.times):
                self.failures += 1
                raise self.exc
        super()._record(event, **kwargs)
