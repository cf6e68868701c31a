"""Benchmark: the cost of a heartbeat as captured output grows from 0 to 20 MB.

Issue 2 asks that a beat cost what is new since the last beat, not the run's history. Each beat
here adds 64 KB of output; the median beat is reported at 0, 5, 10 and 20 MB already captured:

* ours, through ``Run.beat`` (the run's output buffer plus the FileStorageObserver), so the
  run's own handling of the cumulative string is measured too;
* Sacred 0.8.7's FileStorageObserver ``heartbeat_event`` given the same cumulative string
  (Sacred's ``Run`` builds that string by concatenation, a copy per beat, not counted here).

Run: ``.venv/bin/python benchmarks/bench_output.py`` (about 30 s).
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from typing import Any

from prefect_sacred.flows.run import Run
from prefect_sacred.observers.file_storage import FileStorageObserver

SIZES_MB = (0, 5, 10, 20)
CHUNK = 64 * 1024
BEATS = 15


class _InjectedOutput:
    """Stands in for fd capture: ``read`` returns what the benchmark put there."""

    mode = "injected"

    def __init__(self) -> None:
        self.pending = ""

    def read(self) -> str:
        text, self.pending = self.pending, ""
        return text

    def stop(self) -> None:
        pass

    def bind(self) -> None:
        return None


def ours() -> dict[int, float]:
    run = Run(
        experiment_info={"name": "bench", "base_dir": "/tmp", "sources": []},
        host_info={},
        meta_info={},
        config={},
        command="main",
        observers=[FileStorageObserver(tempfile.mkdtemp())],
        beat_interval=0,
        capture_mode="no",
    )
    run.start()
    capture = run._capture = _InjectedOutput()  # type: ignore[assignment]
    medians = {}
    for size in SIZES_MB:
        while len(run.captured_out) < size * 2**20:
            capture.pending = "x" * (2**20 - 1) + "\n"
            run.beat()
        times = []
        for _ in range(BEATS):
            capture.pending = "y" * (CHUNK - 1) + "\n"
            began = time.perf_counter()
            run.beat()
            times.append(time.perf_counter() - began)
        medians[size] = statistics.median(times) * 1e3
    run.complete(None)
    return medians


def sacred() -> dict[int, float]:
    from sacred.observers import FileStorageObserver as SacredFileStorage

    observer: Any = SacredFileStorage(tempfile.mkdtemp())
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    observer.started_event(
        ex_info={"name": "bench", "base_dir": "/tmp", "sources": [], "dependencies": [], "repositories": []},
        command="main",
        host_info={},
        start_time=now,
        config={},
        meta_info={},
        _id=None,
    )
    output = ""
    medians = {}
    for size in SIZES_MB:
        while len(output) < size * 2**20:
            output += "x" * (2**20 - 1) + "\n"
            observer.heartbeat_event(info={}, captured_out=output, beat_time=now, result=None)
        times = []
        for _ in range(BEATS):
            output += "y" * (CHUNK - 1) + "\n"
            began = time.perf_counter()
            observer.heartbeat_event(info={}, captured_out=output, beat_time=now, result=None)
            times.append(time.perf_counter() - began)
        medians[size] = statistics.median(times) * 1e3
    return medians


def main() -> None:
    ours_ms, sacred_ms = ours(), sacred()
    print("| output already captured | ours: Run.beat + FileStorage (ms) | Sacred 0.8.7 FileStorage (ms) |")
    print("|---|---|---|")
    for size in SIZES_MB:
        print(f"| {size} MB | {ours_ms[size]:.2f} | {sacred_ms[size]:.2f} |")
    print(
        f"\nours 20 MB / 0 MB: {ours_ms[20] / ours_ms[0]:.2f}x; "
        f"Sacred 20 MB / 0 MB: {sacred_ms[20] / sacred_ms[0]:.2f}x"
    )


if __name__ == "__main__":
    main()
