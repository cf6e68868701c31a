"""Test doubles for code that uses observers: an in-memory observer, a failing one, and
``capture_runs()``, which records every run started in a block.

Example:
    ```python
    from prefect_sacred.testing import capture_runs

    with capture_runs() as observer:
        ex.run()
    assert observer.runs[-1]["status"] == "COMPLETED"
    assert [name for name, _ in observer.events][0] == "started_event"
    ```
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

from prefect_sacred.observers.base import OutputDelta, RunObserver

__all__ = ["FailingObserver", "InMemoryObserver", "InjectedOutput", "capture_runs"]


class _IdCounter:
    """Run ids 1, 2, 3... for one InMemoryObserver and the copies made of it."""

    def __init__(self) -> None:
        self.last = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"last": self.last}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.last = state["last"]
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.last += 1
            return self.last


class InMemoryObserver(RunObserver):
    """Records every run as a dict in ``runs`` and every call, in order, in ``events``.

    ``events`` holds ``(event name, keyword arguments)`` for every call, with all its arguments:
    ``("started_event", {"ex_info": ..., "command": ..., "host_info": ..., "start_time": ...,
    "config": ..., "meta_info": ..., "_id": None})``. The ``info`` dict of ``heartbeat_event``
    and ``log_metrics`` is the run's live dict, so a shallow copy is recorded; a heartbeat
    records ``output_delta`` too when the run gives one. Every beat's ``captured_out`` is kept:
    meant for tests, not for runs printing gigabytes.

    Run ids are 1, 2, 3... counted by each instance (an ``_id`` given by the run or another
    observer is used as is). The run gives a copy (``copy.copy``) to a run that starts while
    this instance is busy; copies share ``runs``, ``events`` and the id counter with the
    original, so events of overlapping runs interleave in ``events``.

    Args:
        priority: Observers are called in descending priority; the first id returned wins.
    """

    def __init__(self, priority: int = 0) -> None:
        self.priority = priority
        self.runs: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._ids = _IdCounter()
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
        """The run this instance is recording (or the last run recorded by any copy)."""
        return self._current if self._current is not None else self.runs[-1]

    def _record(self, event: str, **kwargs: Any) -> None:
        with self._lock:
            self.events.append((event, kwargs))

    def _new_run(self, _id: Any, status: str, **fields: Any) -> Any:
        """Record the run ``_id`` (or a new one), resuming a queued run of that id."""
        queued = [
            run for run in self.runs if _id is not None and run["_id"] == _id and run["status"] == "QUEUED"
        ]
        _id = self._ids.next() if _id is None else _id
        entry = queued[0] if queued else {}
        entry.update(_id=_id, status=status, **fields)
        if not queued:
            with self._lock:
                self.runs.append(entry)
        self._current = entry
        return _id

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
        self._record(
            "queued_event",
            ex_info=ex_info,
            command=command,
            host_info=host_info,
            queue_time=queue_time,
            config=config,
            meta_info=meta_info,
            _id=_id,
        )
        return self._new_run(
            _id,
            "QUEUED",
            experiment=ex_info,
            command=command,
            host=host_info,
            queue_time=queue_time,
            config=config,
            meta=meta_info,
        )

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
        self._record(
            "started_event",
            ex_info=ex_info,
            command=command,
            host_info=host_info,
            start_time=start_time,
            config=config,
            meta_info=meta_info,
            _id=_id,
        )
        return self._new_run(
            _id,
            "RUNNING",
            experiment=ex_info,
            command=command,
            host=host_info,
            start_time=start_time,
            config=config,
            meta=meta_info,
            info={},
            captured_out="",
            heartbeat=None,
            result=None,
            metrics={},
            artifacts=[],
            resources=[],
        )

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {
            "info": dict(info),
            "captured_out": captured_out,
            "beat_time": beat_time,
            "result": result,
        }
        if output_delta is not None:
            kwargs["output_delta"] = output_delta
        self._record("heartbeat_event", **kwargs)
        self.run.update(info=dict(info), captured_out=captured_out, heartbeat=beat_time, result=result)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        self._record("log_metrics", metrics_by_name=metrics_by_name, info=dict(info))
        for name, metric in metrics_by_name.items():
            stored = self.run["metrics"].setdefault(name, {"steps": [], "values": [], "timestamps": []})
            for key in ("steps", "values", "timestamps"):
                stored[key].extend(metric[key])

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._record("completed_event", stop_time=stop_time, result=result)
        self.run.update(status="COMPLETED", stop_time=stop_time, result=result)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._record("interrupted_event", interrupt_time=interrupt_time, status=status)
        self.run.update(status=status, stop_time=interrupt_time)

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._record("failed_event", fail_time=fail_time, fail_trace=fail_trace)
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
        self._record(
            "artifact_event", name=name, filename=filename, metadata=metadata, content_type=content_type
        )
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

    A call that raises is not recorded in ``events``.

    Args:
        events: Event names that fail, e.g. ``{"heartbeat_event"}``; default: all but ``join``.
        exc: The exception to raise.
        after: How many calls of those events succeed before the failures start.
        times: How many failures, then it recovers (None: fail forever).
        priority: Observers are called in descending priority; the first id returned wins.
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


@contextlib.contextmanager
def capture_runs(priority: int = 0) -> Iterator[InMemoryObserver]:
    """Record every run started inside the block, besides the experiments' own observers.

    Like structlog's ``capture_logs``: the yielded :class:`InMemoryObserver` is added to each
    run started in this context (``ex.run()``, ``ex.run_commandline()``, calling ``ex.flow``),
    with :func:`prefect_sacred.experiment.observing`. Runs started in other threads see
    it only if they run in a copy of this context.

    Args:
        priority: The observer's priority. The default (0) is below every built-in observer,
            so the run keeps the id its own observers give it; the observer gives ids 1, 2...
            only to runs that have no other observer.

    Yields:
        The observer; ``observer.runs`` and ``observer.events`` fill as runs go.

    Example:
        ```python
        with capture_runs() as observer:
            ex.run(config_updates={"epochs": 1})
        assert observer.runs[-1]["config"]["epochs"] == 1
        ```
    """
    from prefect_sacred.experiment import observing

    observer = InMemoryObserver(priority=priority)
    with observing(observer):
        yield observer


class InjectedOutput:
    """Stands in for a run's fd capture: ``read`` returns what the caller put in ``pending``.

    Set it as ``run._capture`` after ``run.start()`` to drive ``Run.beat`` without a flow.
    """

    mode = "injected"

    def __init__(self) -> None:
        self.pending = ""

    def read(self) -> str:
        """What was put in ``pending`` since the last read."""
        text, self.pending = self.pending, ""
        return text

    def stop(self) -> None:
        """Nothing to stop."""

    def bind(self) -> None:
        """Nothing to bind."""
        return None
