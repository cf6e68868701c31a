"""QueueObserver around any observer: Sacred's calling conventions, merged output deltas, and
the public ``save_undelivered`` method through which it hands back what it could not deliver."""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest

from prefect_sacred.observers.base import OutputDelta, PendingEvent, RunObserver
from prefect_sacred.observers.queue import QueueObserver, UndeliveredEvents

NOW = dt.datetime(2026, 12, 1, 12, 0, 0)


def _queue(observer: Any, **kwargs: Any) -> QueueObserver:
    options = {"interval": 0.01, "retry_interval": 0.01, "join_timeout": 5.0, **kwargs}
    return QueueObserver(observer, **options)


def test_started_event_forwards_positional_and_keyword_arguments_as_sacreds_tests_call_it() -> None:
    queue = _queue(mock.MagicMock())
    queue.started_event("args", kwds="kwargs")
    queue.join()
    name, args, kwargs = queue.covered_observer.method_calls[0]  # type: ignore[attr-defined]
    assert (name, args, kwargs) == ("started_event", ("args",), {"kwds": "kwargs"})


@pytest.mark.parametrize(
    "event",
    [
        "heartbeat_event",
        "resource_event",
        "artifact_event",
        "completed_event",
        "interrupted_event",
        "failed_event",
    ],
)
def test_queued_events_forward_positional_and_keyword_arguments(event: str) -> None:
    queue = _queue(mock.MagicMock())
    queue.started_event()
    getattr(queue, event)("args", kwds="kwargs")
    queue.join()
    name, args, kwargs = queue.covered_observer.method_calls[1]  # type: ignore[attr-defined]
    assert (name, args, kwargs) == (event, ("args",), {"kwds": "kwargs"})


def test_queued_event_forwards_its_arguments_and_the_wrapped_observer_has_sacreds_name() -> None:
    covered = mock.MagicMock()
    queue = _queue(covered)
    assert queue.covered_observer is covered and queue._covered_observer is covered
    queue.queued_event("args", kwds="kwargs")
    assert covered.method_calls[0] == mock.call.queued_event("args", kwds="kwargs")
    queue.started_event()
    assert queue._worker is not None and queue._worker.is_alive()  # Sacred's tests check it
    queue.join()


def test_log_metrics_keeps_the_events_signature() -> None:
    queue = _queue(mock.MagicMock())
    queue.started_event()
    metrics = OrderedDict([("a", {"steps": [0], "values": [1]})])
    queue.log_metrics(metrics, "info")
    queue.join()
    assert queue.covered_observer.method_calls[1] == mock.call.log_metrics(metrics, "info")  # type: ignore[attr-defined]


class DeltaStore(RunObserver):
    """Stores output the way a backend does: appends deltas, rewrites when one does not continue."""

    def __init__(self, fail_beats: int = 0) -> None:
        self.fail_beats = fail_beats
        self.stored = ""
        self.appends = 0
        self.rewrites = 0
        self.events: list[str] = []

    def started_event(self, **kwargs: Any) -> Any:  # type: ignore[override]
        return 1

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        if self.fail_beats > 0:
            self.fail_beats -= 1
            raise ConnectionError("backend away")
        new = output_delta.appended_to(len(self.stored)) if output_delta is not None else None
        if new is None:
            self.stored, self.rewrites = captured_out, self.rewrites + 1
        else:
            self.stored, self.appends = self.stored + new, self.appends + 1
        self.events.append("heartbeat_event")

    def log_metrics(self, metrics_by_name: dict[str, Any], info: dict[str, Any]) -> None:
        self.events.append("log_metrics")


def test_heartbeats_waiting_in_an_outage_are_merged_and_their_output_deltas_with_them() -> None:
    store = DeltaStore(fail_beats=3)
    queue = _queue(store, retry_interval=0.2)
    queue.started_event()
    output = ""
    for beat in range(10):
        delta = OutputDelta(len(output), f"line {beat}\n")
        output += delta.text
        queue.log_metrics(metrics_by_name={}, info={})
        queue.heartbeat_event(info={}, captured_out=output, beat_time=NOW, result=None, output_delta=delta)
    queue.join()
    assert store.stored == output
    assert store.rewrites == 0  # every merged delta continued what was stored
    assert store.events.count("heartbeat_event") < 10
    # metrics of a beat always reach the observer before the heartbeat that refers to them
    assert store.events[-1] == "heartbeat_event"


class SavingStore(RunObserver):
    """An observer that cannot write and saves what it was not given itself."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.saved: list[tuple[list[str], str]] = []

    def started_event(self, **kwargs: Any) -> Any:  # type: ignore[override]
        return 7

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        raise ConnectionError("password=hunter2 refused")

    def save_undelivered(self, events: Sequence[PendingEvent], reason: str) -> str | None:
        self.saved.append(([event.name for event in events], reason))
        return f"{self.directory}/saved-by-observer.json"


def test_join_hands_undelivered_events_to_the_observers_save_undelivered(tmp_path: Any) -> None:
    store = SavingStore(str(tmp_path))
    queue = _queue(store, join_timeout=0.5)
    queue.started_event()
    queue.completed_event(stop_time=NOW, result=3)
    with pytest.raises(UndeliveredEvents, match=r"saved-by-observer\.json"):
        queue.join()
    [(names, reason)] = store.saved
    assert names == ["completed_event"]
    assert "hunter2" not in reason and "ConnectionError" in reason


def test_without_save_undelivered_the_events_are_kept_as_json(tmp_path: Any) -> None:
    failing = mock.MagicMock(spec=["started_event", "completed_event", "join", "priority"])
    failing.completed_event.side_effect = ConnectionError("down")
    queue = _queue(failing, join_timeout=0.3, failure_dir=tmp_path)
    queue.started_event()
    queue.completed_event(stop_time=NOW, result={"accuracy": 0.9})
    with pytest.raises(UndeliveredEvents) as raised:
        queue.join()
    [dump] = list(tmp_path.iterdir())
    assert str(dump) in str(raised.value)
    record = json.loads(dump.read_text())
    assert record["events"][0]["event"] == "completed_event"
    assert record["events"][0]["kwargs"]["result"] == {"accuracy": 0.9}


def test_priority_is_the_wrapped_observers_so_the_run_keeps_its_id() -> None:
    inner = RunObserver()
    inner.priority = 30
    assert _queue(inner).priority == 30


def test_an_artifact_the_observer_refuses_is_reported_not_retried_until_the_end() -> None:
    from prefect_sacred.observers.base import InvalidArtifactName

    covered = mock.MagicMock()
    covered.artifact_event.side_effect = InvalidArtifactName("would overwrite run.json")
    queue = _queue(covered, join_timeout=5.0)
    queue.started_event()
    queue.artifact_event(name="run.json", filename="/tmp/x")
    queue.completed_event(stop_time=NOW, result=None)
    queue.join()  # no UndeliveredEvents: the refusal is final, the rest was delivered
    assert covered.artifact_event.call_count == 1
    assert covered.completed_event.call_count == 1


def test_a_delivered_heartbeat_leaves_no_reference_to_the_output() -> None:
    """Any reference kept past delivery makes the run copy its whole output on every beat."""
    import sys
    import time

    store = DeltaStore()
    queue = _queue(store)
    queue.started_event()
    output = "".join(["x"] * 100_000)  # a string object of its own
    before = sys.getrefcount(output)
    queue.heartbeat_event(
        info={}, captured_out=output, beat_time=NOW, result=None, output_delta=OutputDelta(0, output)
    )
    deadline = time.monotonic() + 5
    while (queue._events or queue._busy) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # the worker is back waiting for the next event
    assert store.stored == output
    store.stored = ""  # the double's own copy is not the queue's
    assert sys.getrefcount(output) == before
    queue.join()
