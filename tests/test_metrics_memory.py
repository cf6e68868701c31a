"""Waiting metric points are held packed (issue 8, item 7): a run's memory does not grow with them.

A tight loop logs far more points between two beats than a heartbeat stores; they wait in the
run (the logger, then the beat's batch, then each observer's queued ``log_metrics``). Measured
here with ``tracemalloc``: bytes a waiting point costs, while an observer is busy and cannot
take them. ``benchmarks/bench_memory.py`` measures the whole run's RSS.
"""

from __future__ import annotations

import datetime as dt
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.core.metrics import CHUNK_POINTS, MetricsLogger, linearize_metrics
from prefect_sacred.core.run import Run
from prefect_sacred.testing import InMemoryObserver

POINTS = 100_000
#: Packed, a point is three doubles (24 bytes); the old lists of objects took 110 and more.
BYTES_PER_POINT = 40


@pytest.fixture(autouse=True)
def journal_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "journals"
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(root))
    return root


class BlockedObserver(InMemoryObserver):
    """Takes no metrics until ``release`` is set: the beat's points wait in its queue."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.sizes: list[int] = []

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        self.release.wait(30)
        self.sizes.append(sum(len(metric["values"]) for metric in metrics_by_name.values()))
        super().log_metrics(metrics_by_name, info)


def make_run(observer: InMemoryObserver, journal: bool) -> Run:
    run = Run(
        experiment_info={"name": "memory", "base_dir": "/tmp", "sources": []},
        host_info={},
        meta_info={},
        config={},
        command="main",
        observers=[observer],
        beat_interval=0,  # beats and ticks come from the test
        tick_interval=3600,
        capture_mode="no",
        journal=journal,
        join_timeout=30,
    )
    run.start()
    assert run.start_error is None
    return run


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def held() -> int:
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_points_waiting_for_a_busy_observer_cost_under_40_bytes_each(journal: bool, traced: None) -> None:
    observer = BlockedObserver()
    run = make_run(observer, journal)
    run.beat()  # a first beat: the observer now blocks in log_metrics until released
    before = held()
    for step in range(POINTS):
        run.log_scalar("loss", 1.0 / (step + 1))
    logged = held() - before
    run.tick()  # into the journal and the next beat
    run.beat()  # queued to the observer, which is still busy
    waiting = held() - before
    tracemalloc.stop()  # the rest (the observer storing them) need not be traced: slow
    observer.release.set()
    run.complete(None)
    assert logged / POINTS < BYTES_PER_POINT, f"{logged / POINTS:.0f} bytes a point in the logger"
    assert waiting / POINTS < BYTES_PER_POINT, f"{waiting / POINTS:.0f} bytes a point queued"
    stored = observer.run["metrics"]["loss"]
    assert stored["values"] == [1.0 / (step + 1) for step in range(POINTS)]
    assert stored["steps"] == list(range(POINTS))


def test_a_large_beat_reaches_the_observer_in_bounded_pieces_before_its_heartbeat() -> None:
    observer = InMemoryObserver()
    run = make_run(observer, journal=True)
    total = 2 * CHUNK_POINTS + 123
    for step in range(total):
        run.log_scalar("loss", step * 0.5)
        if step % 7 == 0:
            run.log_scalar("acc", step)  # int values stay ints
    run.complete(None)
    names = [name for name, _ in observer.events]
    first_heartbeat = names.index("heartbeat_event")
    pieces = [
        kw["metrics_by_name"] for name, kw in observer.events[:first_heartbeat] if name == "log_metrics"
    ]
    assert len(pieces) >= 3
    assert all(sum(len(m["values"]) for m in piece.values()) <= CHUNK_POINTS for piece in pieces)
    loss, acc = observer.run["metrics"]["loss"], observer.run["metrics"]["acc"]
    assert loss["values"] == [step * 0.5 for step in range(total)]
    assert loss["steps"] == list(range(total))
    assert acc["values"] == list(range(0, total, 7)) and all(type(v) is int for v in acc["values"])
    assert loss["timestamps"] == sorted(loss["timestamps"])


def test_a_retried_piece_is_given_again_as_the_same_dict_and_none_twice() -> None:
    class FailsOnce(InMemoryObserver):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[int] = []

        def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
            self.seen.append(id(metrics_by_name))
            if len(self.seen) == 2:
                raise ConnectionError("backend away")
            super().log_metrics(metrics_by_name, info)

    observer = FailsOnce()
    run = make_run(observer, journal=False)
    run.fanout.retry_interval = 0.01
    total = 3 * CHUNK_POINTS
    for step in range(total):
        run.log_scalar("loss", float(step))
    run.complete(None)
    assert observer.seen[1] == observer.seen[2]  # the failed piece, retried as it was
    assert observer.run["metrics"]["loss"]["values"] == [float(step) for step in range(total)]
    assert observer.run["status"] == "COMPLETED"


STAMP = 1_700_000_000.25


def test_every_kind_of_point_comes_back_as_it_was_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Floats stay floats, ints ints, bools bools, float and huge steps as they were, in order."""
    monkeypatch.setattr("prefect_sacred.core.metrics.time.time", lambda: STAMP)
    logged = [
        ("f", 0.5, None),
        ("f", 1.5, None),
        ("f", 2, 10),
        ("f", 3.5, None),  # float -> mixed
        ("i", 1, None),
        ("i", 2**60, None),
        ("i", -3, 2.5),  # int, then beyond 2**53, float step
        ("b", True, 0),
        ("b", False, 1),
        ("s", 0.25, 2**62),
        ("s", 0.75, None),  # a step a double cannot hold exactly
        ("n", float("nan"), -5),
        ("n", float("inf"), None),
    ]
    logger = MetricsLogger()
    for name, value, step in logged:
        logger.log_scalar(name, value, step)
    got = logger.drain().metrics_by_name()
    steps: dict[str, int | float] = {}
    expected = []
    for name, value, step in logged:
        step = steps.get(name, 0) if step is None else step
        steps[name] = step + 1
        expected.append((name, step, value, STAMP))
    want = linearize_metrics(expected)
    assert repr(got) == repr(want)  # repr: the types too (1 vs 1.0 vs True), and NaN
    for name in want:
        for key in ("steps", "values"):
            assert [type(v) for v in got[name][key]] == [type(v) for v in want[name][key]]
    assert got["f"]["timestamps"][0] == dt.datetime(2023, 11, 14, 22, 13, 20, 250000)
    assert not logger.drain()


def test_threads_logging_at_once_while_ticks_drain_lose_no_point() -> None:
    logger = MetricsLogger()
    per_thread = 50_000
    done = threading.Event()
    drained = []

    def log(name: str) -> None:
        for step in range(per_thread):
            logger.log_scalar(name, float(step))
            if step == per_thread // 2:
                logger.log_scalar(name, 7)  # turns the metric into objects mid-stream

    def drain() -> None:
        while not done.is_set():
            drained.append(logger.drain())
        drained.append(logger.drain())

    drainer = threading.Thread(target=drain)
    drainer.start()
    threads = [threading.Thread(target=log, args=(name,)) for name in ("a", "b", "a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    drainer.join()
    values: dict[str, list[Any]] = {}
    for batch in drained:
        for name, metric in batch.metrics_by_name().items():
            values.setdefault(name, []).extend(metric["values"])
    assert len(values["a"]) == 2 * (per_thread + 1) and len(values["b"]) == per_thread + 1
    assert sorted(v for v in values["b"] if type(v) is float) == [float(s) for s in range(per_thread)]
