"""Benchmark: what the run's journal costs, and durable points per second through FileStorage.

(a) ``Run.log_scalar`` per call with the journal on and off, in a started run whose heartbeat
    thread ticks (writes points and output to the journal) every second: blocks of 1,000 calls,
    one clock read per block; median and mean of the per-call block means.

(b) Durable points per second: one run logs N points as fast as it can with a beat every
    second, then ends; the time from the first point until every point is stored (the final
    event returned, ``metrics.json`` complete) gives points/s. Ours with the journal, ours
    without, and Sacred 0.8.7's ``FileStorageObserver`` fed the way Sacred's own run feeds it
    (its ``MetricsLogger``, a heartbeat thread calling ``log_metrics`` + ``heartbeat_event``
    every second, a final beat), in the same process, one after the other. Last, the rate at
    which the journal alone makes points durable (a tick: drain, encode, append).

Run: ``.venv/bin/python benchmarks/bench_journal.py`` (about a minute; ``--points`` sets N).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect_sacred.core.run import Run
from prefect_sacred.observers.file_storage import FileStorageObserver

EX_INFO: dict[str, Any] = {
    "name": "bench",
    "base_dir": ".",
    "sources": [],
    "dependencies": [],
    "repositories": [],
    "mainfile": None,
}


def our_run(observers: list[Any], journal: bool, beat_interval: float) -> Run:
    run = Run(
        experiment_info=dict(EX_INFO),
        host_info={},
        meta_info={},
        config={},
        command="main",
        observers=observers,
        beat_interval=beat_interval,
        capture_mode="no",
        journal=journal,
    )
    run.start()
    if run.start_error is not None:
        raise run.start_error
    return run


def bench_log_scalar(journal: bool, blocks: int, block_size: int = 1_000) -> tuple[float, float]:
    """Median and mean ns per ``Run.log_scalar`` in a live run (ticks every second)."""
    with tempfile.TemporaryDirectory() as workdir:
        run = our_run([FileStorageObserver(workdir)], journal, beat_interval=10.0)
        per_call = []
        step = 0
        for _ in range(blocks):
            began = time.perf_counter()
            for _ in range(block_size):
                run.log_scalar("loss", 0.5, step)
                step += 1
            per_call.append((time.perf_counter() - began) / block_size * 1e9)
        run.complete(None)
    return statistics.median(per_call), statistics.fmean(per_call)


def stored_points(run_dir: str) -> int:
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
        return sum(len(series["values"]) for series in json.load(handle).values())


def durable_ours(points: int, journal: bool) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        observer = FileStorageObserver(workdir)
        began = time.perf_counter()
        run = our_run([observer], journal, beat_interval=1.0)
        for step in range(points):
            run.log_scalar("loss", 0.5, step)
        run.complete(None)
        took = time.perf_counter() - began
        assert stored_points(os.path.join(workdir, str(run._id))) == points
    return points / took


def journal_rate(points: int, per_tick: int = 100_000) -> float:
    """Points/s the journal itself makes durable: ticks of ``per_tick`` points, encoded and appended."""
    from prefect_sacred.core.journal import RunJournal
    from prefect_sacred.core.metrics import MetricsLogger

    logger = MetricsLogger()
    journal = RunJournal.create(None, {})
    took = 0.0
    for start in range(0, points, per_tick):
        for step in range(start, min(start + per_tick, points)):
            logger.log_scalar("loss", 0.5, step)
        began = time.perf_counter()
        journal.add_points(logger.drain())  # what a tick does (drain included)
        took += time.perf_counter() - began
    journal.delete()
    return points / took


def durable_sacred(points: int) -> float:
    from sacred.metrics_logger import MetricsLogger, linearize_metrics
    from sacred.observers import FileStorageObserver as SacredFileStorageObserver

    with tempfile.TemporaryDirectory() as workdir:
        observer = SacredFileStorageObserver(workdir)
        logger = MetricsLogger()
        began = time.perf_counter()
        observer.started_event(EX_INFO, "main", {}, dt.datetime.utcnow(), {}, {}, None)
        stop = threading.Event()

        def emit() -> None:  # what Sacred's Run._emit_heartbeat does
            observer.log_metrics(linearize_metrics(logger.get_last_metrics()), {})
            observer.heartbeat_event({}, "", dt.datetime.utcnow(), None)

        def beats() -> None:
            while not stop.wait(1.0):
                emit()

        thread = threading.Thread(target=beats, daemon=True)
        thread.start()
        for step in range(points):
            logger.log_scalar_metric("loss", 0.5, step)
        stop.set()
        thread.join()
        emit()
        observer.completed_event(dt.datetime.utcnow(), None)
        took = time.perf_counter() - began
        assert stored_points(observer.dir) == points
    return points / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per durable run")
    parser.add_argument("--blocks", type=int, default=1_000, help="blocks of 1,000 log_scalar calls")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SACRED_JOURNAL_DIR", tempfile.mkdtemp(prefix="bench-journal-"))

    print("## `Run.log_scalar` per call in a live run (ns; ticks write the journal every second)\n")
    print("| journal | median | mean |\n|---|---:|---:|")
    on, off = bench_log_scalar(True, args.blocks), bench_log_scalar(False, args.blocks)
    print(f"| on | {on[0]:,.0f} | {on[1]:,.0f} |")
    print(f"| off | {off[0]:,.0f} | {off[1]:,.0f} |")
    print(f"\nmedian on/off: {on[0] / off[0]:.2f}x, mean on/off: {on[1] / off[1]:.2f}x")

    print(f"\n## Durable points/s through FileStorage, {args.points:,} points, a beat per second\n")
    print("| run | points/s | vs Sacred |\n|---|---:|---:|")
    sacred = durable_sacred(args.points)
    with_journal = durable_ours(args.points, journal=True)
    without = durable_ours(args.points, journal=False)
    for name, rate in (
        ("ours, journal on", with_journal),
        ("ours, journal off", without),
        ("Sacred 0.8.7 FileStorageObserver", sacred),
    ):
        print(f"| {name} | {rate:,.0f} | {rate / sacred:.2f}x |")
    rate = journal_rate(args.points)
    print(
        f"| the journal alone (durable on local disk within a second) | {rate:,.0f} | {rate / sacred:.2f}x |"
    )


if __name__ == "__main__":
    main()
