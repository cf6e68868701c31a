"""The run's write-ahead journal and its delivery workers, in this process (no flows: fast).

Each test drives a ``Run`` directly (start, beats, end) with an injected output capture, so the
journal, the workers and the bounded end are what is measured, not Prefect.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.core.journal import RunJournal
from prefect_sacred.core.run import Run
from prefect_sacred.testing import FailingObserver, InMemoryObserver
from tests.support import InjectedOutput, wait_for


@pytest.fixture(autouse=True)
def journal_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "journals"
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(root))
    return root


def start_run(
    *observers: Any, beat_interval: float = 0, join_timeout: float = 5.0
) -> tuple[Run, InjectedOutput]:
    run = Run(
        experiment_info={"name": "journal", "base_dir": "/tmp", "sources": []},
        host_info={},
        meta_info={},
        config={"lr": 0.1},
        command="main",
        observers=list(observers),
        beat_interval=beat_interval,
        capture_mode="no",
        join_timeout=join_timeout,
    )
    run.fanout.retry_interval, run.fanout.max_retry_interval = 0.01, 0.05  # a fast outage
    run.start()
    assert run.start_error is None
    capture = InjectedOutput()
    run._capture = capture  # type: ignore[assignment]
    return run, capture


def points_of(observer: InMemoryObserver, name: str) -> list[Any]:
    return list(observer.run["metrics"].get(name, {}).get("values", []))


# --- the journal's format ------------------------------------------------------------------------


def test_records_are_numbered_json_lines_private_to_the_owner(journal_root: Path) -> None:
    journal = RunJournal.create("flow-run-1", {"run_id": 7})
    journal.add_output("epoch 1\n")
    journal.add_event("heartbeat_event", info={"a": 1})
    path = Path(journal.path)
    assert path.parent == journal_root and path.name == "flow-run-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((path / "journal.jsonl").stat().st_mode) == 0o600
    lines = (path / "journal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["seq"], r["kind"]) for r in records] == [(0, "run"), (1, "output"), (2, "event")]
    assert records[0]["run_id"] == 7 and records[0]["pid"] == os.getpid()
    journal.close()


def test_a_torn_last_line_is_ignored_then_cut_off_so_appends_go_on(journal_root: Path) -> None:
    journal = RunJournal.create(None, {"run_id": 1})
    journal.add_output("kept\n")
    journal.close()
    log = Path(journal.path) / "journal.jsonl"
    with open(log, "ab") as handle:  # what SIGKILL mid-write leaves
        handle.write(b'{"seq": 2, "kind": "output", "text": "half a rec')
    reopened = RunJournal.open(journal.path)
    assert [r["kind"] for r in reopened.records()] == ["run", "output"]
    assert reopened.add_output("after\n") == 2
    assert [r.get("text") for r in reopened.records()][1:] == ["kept\n", "after\n"]
    reopened.close()


def test_a_value_that_cannot_be_encoded_costs_only_itself(journal_root: Path) -> None:
    class Hostile:
        def __getstate__(self) -> Any:
            raise RuntimeError("no state for you")

        def __repr__(self) -> str:
            return "<Hostile>"

    journal = RunJournal.create(None, {})
    journal.add_event("heartbeat_event", info={"good": [1, 2], "bad": Hostile()})
    record = journal.records()[-1]
    assert "<Hostile>" in json.dumps(record)  # a marked repr, in its place
    from prefect_sacred.core.records import restore_value

    assert restore_value(record["info"])["good"] == [1, 2]
    journal.close()


def test_a_live_journal_is_locked_against_other_writers(journal_root: Path) -> None:
    from prefect_sacred.core.journal import JournalLocked

    journal = RunJournal.create(None, {})
    with pytest.raises(JournalLocked):
        RunJournal.open(journal.path)
    journal.close()
    RunJournal.open(journal.path).close()


# --- the run writes it -----------------------------------------------------------------------------


def test_points_and_output_reach_the_journal_within_a_second_whatever_the_beat_interval() -> None:
    observer = InMemoryObserver()
    run, capture = start_run(observer, beat_interval=3600)
    journal_path = run.journal_path
    assert journal_path is not None
    began = time.monotonic()
    for step in range(5):
        run.log_scalar("loss", 1.0 / (step + 1))
    capture.pending = "epoch 0 done\n"

    def journaled() -> list[dict[str, Any]] | None:
        records = RunJournal(journal_path, 0, -1).records()
        kinds = {r["kind"] for r in records}
        return records if {"points", "output"} <= kinds else None

    records = wait_for(journaled, timeout=3, interval=0.05, what="points and output in the journal")
    assert time.monotonic() - began < 1.6
    [points] = [r["points"]["loss"] for r in records if r["kind"] == "points"]
    assert points["values"] == [1.0, 0.5, 1 / 3, 0.25, 0.2] and points["steps"] == [0, 1, 2, 3, 4]
    assert [r["text"] for r in records if r["kind"] == "output"] == ["epoch 0 done\n"]
    assert [name for name, _ in observer.events] == ["started_event"]  # nothing delivered yet
    run.complete("done")
    assert points_of(observer, "loss") == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert observer.run["captured_out"] == "epoch 0 done\n"
    assert not os.path.exists(journal_path)  # everything delivered: the journal is gone


# --- delivery workers ------------------------------------------------------------------------------


def test_a_backend_down_then_back_gets_everything_in_order_without_duplicates() -> None:
    healthy = InMemoryObserver()
    flaky = FailingObserver(events={"log_metrics", "heartbeat_event", "completed_event"}, after=1, times=6)
    run, capture = start_run(healthy, flaky)
    for beat in range(6):
        for step in range(beat * 10, beat * 10 + 10):
            run.log_scalar("loss", float(step))
        capture.pending = f"beat {beat}\n"
        run.beat()
    run.complete("ok")
    assert flaky.failures == 6 and run.observer_errors == {"FailingObserver": 6}
    expected = [float(step) for step in range(60)]
    assert points_of(flaky, "loss") == expected == points_of(healthy, "loss")
    assert flaky.run["captured_out"] == "".join(f"beat {b}\n" for b in range(6))
    assert flaky.run["status"] == "COMPLETED" and flaky.run["result"] == "ok"
    names = [name for name, _ in flaky.events]
    assert names[-2:] == ["completed_event", "join"]


class Hung(InMemoryObserver):
    """A backend that accepts the start, then never answers its final event."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def completed_event(self, stop_time: Any, result: Any) -> None:
        self.release.wait()
        super().completed_event(stop_time, result)


def test_a_hung_observer_delays_neither_the_others_nor_the_end_beyond_the_join_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung, other = Hung(), InMemoryObserver()
    hung.priority = 10  # called first: it used to hold the others back
    run, _ = start_run(hung, other, join_timeout=1.0)
    run.log_scalar("loss", 0.1)
    journal_path = run.journal_path
    began = time.monotonic()
    with caplog.at_level(logging.ERROR):
        run.complete(42)
    took = time.monotonic() - began
    assert took < 1.0 + 0.5, took
    assert other.run["status"] == "COMPLETED" and points_of(other, "loss") == [0.1]
    [line] = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert line.startswith("observer Hung: 1 event(s) not delivered after 1 s (completed_event;")
    assert f"prefect-sacred sync {journal_path}" in line
    assert journal_path is not None and os.path.isdir(journal_path)  # kept: nothing is dropped
    hung.release.set()


class SavesWhatItMissed(InMemoryObserver):
    """A backend down from the first beat on, that can keep what it missed (as MongoObserver's
    failure file does)."""

    def __init__(self, where: Path) -> None:
        super().__init__()
        self.where = where
        self.saved: list[str] = []

    def heartbeat_event(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("backend down")

    def completed_event(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("backend down")

    def save_undelivered(self, events: Any, reason: str) -> str | None:
        self.saved = [event.name for event in events]
        self.where.write_text(reason)
        return str(self.where)


def test_without_a_journal_what_an_observer_missed_goes_to_its_own_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL", "off")
    down = SavesWhatItMissed(tmp_path / "missed.json")
    run, _ = start_run(down, join_timeout=0.5)
    assert run.journal_path is None
    run.log_scalar("loss", 0.1)
    run.beat()
    with caplog.at_level(logging.ERROR):
        run.complete(42)
    assert down.saved[-1] == "completed_event" and "heartbeat_event" in down.saved
    assert "backend down" in (tmp_path / "missed.json").read_text()
    [line] = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert line.endswith(f"the run keeps no journal; saved by the observer to {tmp_path / 'missed.json'}")


def test_a_config_value_that_cannot_be_copied_is_the_runs_error_not_an_observers() -> None:
    class Uncopyable:
        def __deepcopy__(self, memo: Any) -> Any:
            raise TypeError("no copies")

    observer = InMemoryObserver()
    run = Run(
        experiment_info={"name": "copy"},
        host_info={},
        meta_info={},
        config={"fine": 1, "handle": Uncopyable()},
        command="main",
        observers=[observer],
        beat_interval=0,
        capture_mode="no",
    )
    run.start()
    assert run.start_error is not None
    message = str(run.start_error)
    assert message.startswith("config value 'handle' cannot be copied: TypeError: no copies")
    assert "observer" not in message
    assert observer.run["config"]["fine"] == 1  # the observers started, and hear the failure
    run.fail([message])
    assert observer.run["status"] == "FAILED"


def test_a_failure_file_written_while_delivering_a_journaled_run_goes_into_its_journal(
    tmp_path: Path,
) -> None:
    mongomock = pytest.importorskip("mongomock")
    from bson import json_util

    from prefect_sacred.observers.base import PendingEvent
    from prefect_sacred.observers.delivery import DeliveryWorker
    from prefect_sacred.observers.mongo.failures import write_failure_file

    runs = mongomock.MongoClient()["sacred"]["runs"]
    journal = tmp_path / "journal"
    journal.mkdir()
    worker = DeliveryWorker(InMemoryObserver())
    worker.journal_path = str(journal)
    paths = []

    def save(result: int) -> None:  # what MongoObserver does when its final write fails
        run = {"_id": 3, "status": "COMPLETED", "result": result}
        paths.append(write_failure_file(None, "down", runs, None, run, {}, []))

    for attempt in range(3):
        worker.put(PendingEvent("completed_event", save, (attempt,)))
    assert worker.wait_idle(time.monotonic() + 5)
    worker.stop()
    assert set(paths) == {str(journal / "sacred_mongo_fail_3_latest.json")}  # one file per run
    dump = json_util.loads((journal / "sacred_mongo_fail_3_latest.json").read_text())
    assert dump["run"]["result"] == 2 and dump["reason"] == "down"


def test_an_experiments_join_timeout_bounds_the_end_of_its_runs() -> None:
    from prefect_sacred import Experiment

    hung, other = Hung(), InMemoryObserver()
    ex = Experiment("bounded")
    ex.observers += [hung, other]
    ex.join_timeout = 0.5

    @ex.main
    def main() -> int:
        return 1

    began = time.monotonic()
    run = ex.run()
    assert time.monotonic() - began < 25  # not the default 30 s: the flow's start and end, 0.5 s
    assert other.run["status"] == "COMPLETED" and run.status == "COMPLETED"
    assert run.fanout.undelivered == {"Hung": 1}
    hung.release.set()
