"""Benchmark: our MongoObserver next to Sacred 0.8.7's, on the same wire server, same process.

Both observers talk real pymongo over TCP to ``tests/servers/mongo_wire.py`` (mockupdb in front
of mongomock: no real mongod can be installed here), each in a database of its own.

(a) Metrics flush: ``log_metrics`` + ``heartbeat_event`` with 1,000 new points per beat
    (10 metrics x 100 points), over ``--beats`` beats; mean and median per beat.
    Target: ours no slower than Sacred's.

(b) Heartbeat cost as ``captured_out`` grows from 0 to 20 MB: at each size 4 timed beats add
    64 KB of output each; the median and the mean of the 4 are reported. The mean counts the
    GridFS chunk ours writes about once per 4 beats (255 KB), which the median leaves out.
    ``--repeat`` runs (b) several times on fresh databases and reports the median over the runs
    (the machine is shared: single runs are noisy). Sacred re-sends the whole output on every
    beat and cannot write past 16 MB; ours keeps the most recent 256 K characters in the
    document and appends the rest to a GridFS file by whole chunks.
    Target: ours at 20 MB within 2x of ours at 0 MB.

Run: ``.venv/bin/python benchmarks/bench_mongo.py [--repeat 5]`` (about a minute per repeat).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore")

from prefect_sacred.observers.base import OutputDelta  # noqa: E402  (after the sys.path line)
from prefect_sacred.observers.mongo import MongoObserver  # noqa: E402
from tests.servers.mongo_wire import MongoWireServer  # noqa: E402

EX_INFO = {
    "name": "bench",
    "base_dir": os.getcwd(),
    "sources": [],
    "dependencies": [],
    "repositories": [],
    "mainfile": None,
}
SIZES_MB = [0, 1, 4, 8, 15, 20]
STEP = 64 * 1024
TIMED_BEATS = 4  # 4 x 64 KB: one GridFS chunk of ours per size, and 0 MB stays within the document


def start(observer: Any) -> None:
    observer.started_event(
        ex_info=dict(EX_INFO),
        command="main",
        host_info={"hostname": "h"},
        start_time=dt.datetime.now(),
        config={"lr": 0.1},
        meta_info={},
        _id=None,
    )


def sacred_observer(uri: str, db: str) -> Any:
    from sacred.observers import MongoObserver as SacredMongoObserver

    return SacredMongoObserver(url=uri, db_name=db)


def beat(
    observer: Any,
    info: dict[str, Any],
    out: str,
    metrics: dict[str, Any] | None,
    delta: OutputDelta | None = None,
) -> float:
    """One beat, timed; ``delta`` (what ``out`` gained) goes to ours, as the run sends it."""
    extra = {} if delta is None else {"output_delta": delta}
    began = time.perf_counter()
    if metrics is not None:
        observer.log_metrics(metrics_by_name=metrics, info=info)
    observer.heartbeat_event(info=info, captured_out=out, beat_time=dt.datetime.now(), result=None, **extra)
    return time.perf_counter() - began


def metric_batch(beat_no: int) -> dict[str, Any]:
    now = dt.datetime.now()
    return {
        f"m{k}": {
            "name": f"m{k}",
            "steps": list(range(beat_no * 100, beat_no * 100 + 100)),
            "values": [0.5] * 100,
            "timestamps": [now] * 100,
        }
        for k in range(10)
    }


def bench_metrics(uri: str, beats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for label, observer in (
        ("sacred", sacred_observer(uri, "bench_m_sacred")),
        ("ours", MongoObserver(url=uri, db_name="bench_m_ours")),
    ):
        start(observer)
        info: dict[str, Any] = {}
        times[label] = [beat(observer, info, "", metric_batch(i)) for i in range(beats)]
    return times


def bench_output(uri: str, run: int) -> dict[str, dict[int, tuple[float, float] | None]]:
    """``{label: {size MB: (median, mean) seconds per beat, or None where it failed}}``."""
    results: dict[str, dict[int, tuple[float, float] | None]] = {}
    for label, observer in (
        ("sacred", sacred_observer(uri, f"bench_o_sacred_{run}")),
        ("ours", MongoObserver(url=uri, db_name=f"bench_o_ours_{run}")),
    ):
        start(observer)
        out, info = "", {"epoch": 1}
        shown = 0  # the output the previous beat carried: ours gets the delta since, as from a run
        results[label] = {}
        for size in SIZES_MB:
            while len(out) < size * 1024 * 1024:  # grow (untimed) in 1 MB steps, as beats would
                out += ("y" * 127 + "\n") * (8 * 1024)
                if label == "ours" or len(out) < 15 * 1024 * 1024:
                    beat(observer, info, out, None, _delta(out, shown, label))
                    shown = len(out)
            samples: list[float] = []
            try:
                for _ in range(TIMED_BEATS):
                    out += ("x" * 127 + "\n") * (STEP // 128)
                    samples.append(beat(observer, info, out, None, _delta(out, shown, label)))
                    shown = len(out)
                results[label][size] = (statistics.median(samples), statistics.mean(samples))
            except Exception as exc:  # Sacred past 16 MB
                results[label][size] = None
                if run == 0:
                    print(f"  {label} at {size} MB: {type(exc).__name__}: {str(exc)[:80]}")
    return results


def _delta(out: str, shown: int, label: str) -> OutputDelta | None:
    """What ``out`` gained since the beat that carried ``shown`` characters (for ours only)."""
    return OutputDelta(shown, out[shown:]) if label == "ours" else None


def _median_over_runs(
    runs: list[dict[str, dict[int, tuple[float, float] | None]]], label: str, size: int, which: int
) -> float | None:
    values = [pair[which] for r in runs if (pair := r[label][size]) is not None]
    return statistics.median(values) if values else None


def _ms(value: float | None, width: int) -> str:
    return f"{value * 1e3:{width}.2f}" if value is not None else f"{'fails':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beats", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="runs of (b); the median is reported")
    args = parser.parse_args()
    with MongoWireServer() as server:
        uri = server.uri
        print(f"wire server at {uri}\n")
        metrics = bench_metrics(uri, args.beats)
        print(f"(a) log_metrics + heartbeat, 1,000 new points per beat, {args.beats} beats (ms)")
        print(f"{'':10}{'mean':>10}{'median':>10}{'last 10':>10}")
        for label, samples in metrics.items():
            print(
                f"{label:10}{statistics.mean(samples) * 1e3:10.2f}{statistics.median(samples) * 1e3:10.2f}"
                f"{statistics.mean(samples[-10:]) * 1e3:10.2f}"
            )
        ratio = statistics.mean(metrics["ours"]) / statistics.mean(metrics["sacred"])
        print(f"ours / sacred (mean): {ratio:.2f}  target <= 1.0\n")

        runs = [bench_output(uri, run) for run in range(args.repeat)]
        print(
            f"(b) heartbeat with +64 KB output, by captured_out size (ms per beat; {TIMED_BEATS} beats, "
            f"median over {args.repeat} run(s))"
        )
        print(
            f"{'size MB':>8}{'sacred med':>12}{'ours med':>10}{'ours mean':>11}{'med/0MB':>9}{'mean/0MB':>10}"
        )
        base_median = _median_over_runs(runs, "ours", 0, 0) or float("nan")
        base_mean = _median_over_runs(runs, "ours", 0, 1) or float("nan")
        for size in SIZES_MB:
            sacred = _median_over_runs(runs, "sacred", size, 0)
            median, mean = _median_over_runs(runs, "ours", size, 0), _median_over_runs(runs, "ours", size, 1)
            print(
                f"{size:8}{_ms(sacred, 12)}{_ms(median, 10)}{_ms(mean, 11)}"
                f"{(median or 0) / base_median:9.2f}{(mean or 0) / base_mean:10.2f}"
            )
        ratios = [(r["ours"][20] or (0.0, 0.0))[0] / (r["ours"][0] or (1.0, 1.0))[0] for r in runs]
        print(
            f"ours at 20 MB / ours at 0 MB, each run (median beat): {', '.join(f'{x:.2f}' for x in ratios)}"
        )
        at20_median = (_median_over_runs(runs, "ours", 20, 0) or 0.0) / base_median
        at20_mean = (_median_over_runs(runs, "ours", 20, 1) or 0.0) / base_mean
        print(
            f"ours at 20 MB / ours at 0 MB: median beat {at20_median:.2f}, mean beat {at20_mean:.2f}"
            "  target <= 2.0"
        )


if __name__ == "__main__":
    main()
