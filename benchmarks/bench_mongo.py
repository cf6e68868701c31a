"""Benchmark: our MongoObserver next to Sacred 0.8.7's, on the same wire server, same process.

Both observers talk real pymongo over TCP to ``tests/servers/mongo_wire.py`` (mockupdb in front
of mongomock: no real mongod can be installed here), each in a database of its own.

(a) Metrics flush: ``log_metrics`` + ``heartbeat_event`` with 1,000 new points per beat
    (10 metrics x 100 points), over ``--beats`` beats; mean and median per beat.
    Target: ours no slower than Sacred's.

(b) Heartbeat cost as ``captured_out`` grows from 0 to 20 MB: at each size the beat adds 64 KB
    of output; the median of 3 timed beats is reported. Sacred re-sends the whole output on
    every beat and cannot write past 16 MB (DocumentTooLarge); ours keeps the most recent
    256 K characters in the document and appends the rest to a GridFS file.
    Target: ours at 20 MB within 2x of ours at 0 MB.

Run: ``.venv/bin/python benchmarks/bench_mongo.py`` (about a minute).
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

from prefect_sacred.observers.mongo import MongoObserver  # noqa: E402  (after the sys.path line)
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


def beat(observer: Any, info: dict[str, Any], out: str, metrics: dict[str, Any] | None) -> float:
    began = time.perf_counter()
    if metrics is not None:
        observer.log_metrics(metrics_by_name=metrics, info=info)
    observer.heartbeat_event(info=info, captured_out=out, beat_time=dt.datetime.now(), result=None)
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


def bench_output(uri: str) -> dict[str, dict[int, float | None]]:
    results: dict[str, dict[int, float | None]] = {}
    for label, observer in (
        ("sacred", sacred_observer(uri, "bench_o_sacred")),
        ("ours", MongoObserver(url=uri, db_name="bench_o_ours")),
    ):
        start(observer)
        out, info = "", {"epoch": 1}
        results[label] = {}
        for size in SIZES_MB:
            while len(out) < size * 1024 * 1024:  # grow (untimed) in 1 MB steps, as beats would
                out += ("y" * 127 + "\n") * (8 * 1024)
                if label == "ours" or len(out) < 15 * 1024 * 1024:
                    beat(observer, info, out, None)
            samples: list[float] = []
            try:
                for _ in range(3):
                    out += ("x" * 127 + "\n") * (STEP // 128)
                    samples.append(beat(observer, info, out, None))
                results[label][size] = statistics.median(samples)
            except Exception as exc:  # Sacred past 16 MB
                results[label][size] = None
                print(f"  {label} at {size} MB: {type(exc).__name__}: {str(exc)[:80]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beats", type=int, default=50)
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

        output = bench_output(uri)
        print("(b) heartbeat with +64 KB output, by captured_out size (ms, median of 3)")
        print(f"{'size MB':>8}{'sacred':>12}{'ours':>10}{'sacred/ours':>13}")
        for size in SIZES_MB:
            sacred, ours = output["sacred"][size], output["ours"][size]
            s_text = f"{sacred * 1e3:12.2f}" if sacred is not None else f"{'fails':>12}"
            ratio_text = f"{sacred / ours:13.1f}" if sacred is not None and ours else f"{'-':>13}"
            print(f"{size:8}{s_text}{(ours or 0) * 1e3:10.2f}{ratio_text}")
        ours0, ours20 = output["ours"][0] or 0.0, output["ours"][20] or 0.0
        print(f"ours at 20 MB / ours at 0 MB: {ours20 / ours0:.2f}  target <= 2.0")


if __name__ == "__main__":
    main()
