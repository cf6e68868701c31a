"""Benchmark: bytes uploaded and time per beat, our S3Observer beside Sacred 0.8.7's.

Both observers write to the same in-process moto S3 server over HTTP; bytes are the request
bodies counted by a botocore ``before-send`` hook. Workloads:

* metrics: 1,000 new points per beat as the history grows to 10k, 100k and 1M points. Ours
  grows beat by beat from zero (its upload rule depends on the history) and each size is
  reported over the beats that took it from N/2 to N, so consolidations are included. Sacred
  re-uploads the whole ``metrics.json`` every beat: its history is seeded with N points and
  three beats are timed.
* output: 100 kB of new output per beat up to 20 MB, reported over the last half. Sacred
  uploads only the newest piece as ``cout.txt`` (its bug: earlier output is lost), so its
  bytes are low for the wrong reason.

Run: ``.venv/bin/python benchmarks/bench_s3.py`` (``--quick`` stops at 100k points, 5 MB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.object_store.s3 import S3Observer

POINTS_PER_BEAT = 1_000
OUTPUT_PER_BEAT = 100_000
START = dt.datetime(2024, 1, 1, 12, 0, 0)
EX_INFO: dict[str, Any] = {"name": "bench", "base_dir": ".", "sources": [], "dependencies": []}


class Counter:
    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, request: Any, **_: Any) -> None:
        self.bytes += int(request.headers.get("Content-Length") or 0)


def batch(beat: int) -> dict[str, dict[str, list[Any]]]:
    steps = list(range(beat * POINTS_PER_BEAT, (beat + 1) * POINTS_PER_BEAT))
    return {"loss": {"steps": steps, "values": [0.5] * len(steps), "timestamps": [START] * len(steps)}}


def ours(endpoint: str, sizes: list[int], output_bytes: int) -> None:
    observer = S3Observer("bench-ours", "runs", endpoint_url=endpoint)
    observer.started_event(EX_INFO, "main", {}, START, {}, {}, None)
    counter = Counter()
    observer.store.client.meta.events.register("before-send.s3", counter)  # type: ignore[attr-defined]
    beat = 0
    for size in sizes:
        window_bytes, window_time, beats = 0, 0.0, 0
        while (beat + 1) * POINTS_PER_BEAT <= size:
            before, began = counter.bytes, time.perf_counter()
            observer.log_metrics(batch(beat), {})
            observer.heartbeat_event({}, "", START, None, OutputDelta(0, ""))
            if (beat + 1) * POINTS_PER_BEAT > size // 2:
                window_bytes += counter.bytes - before
                window_time += time.perf_counter() - began
                beats += 1
            beat += 1
        print(f"ours   metrics {size:>9,} points: {window_bytes / beats / 1e3:10.1f} kB/beat "
              f"{window_time / beats * 1e3:8.1f} ms/beat")  # fmt: skip
    output_run(observer, counter, output_bytes, "ours  ")


def output_run(observer: Any, counter: Counter, output_bytes: int, label: str) -> None:
    text = ""
    window_bytes, window_time, beats = 0, 0.0, 0
    while len(text) < output_bytes:
        new = ("x" * 99 + "\n") * (OUTPUT_PER_BEAT // 100)
        before, began = counter.bytes, time.perf_counter()
        if label.startswith("ours"):
            observer.heartbeat_event({}, text + new, START, None, OutputDelta(len(text), new))
        else:
            observer.heartbeat_event({}, text + new, START, None)
        text += new
        if len(text) > output_bytes // 2:
            window_bytes += counter.bytes - before
            window_time += time.perf_counter() - began
            beats += 1
    print(f"{label} output  {len(text) / 1e6:6.1f} MB:          {window_bytes / beats / 1e3:10.1f} kB/beat "
          f"{window_time / beats * 1e3:8.1f} ms/beat")  # fmt: skip


def sacreds(endpoint: str, sizes: list[int], output_bytes: int) -> None:
    import boto3
    from sacred.observers import S3Observer as SacredS3Observer

    os.environ["AWS_ENDPOINT_URL"] = endpoint  # Sacred has no endpoint parameter
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench-sacred")
    counter = Counter()
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-send.s3", counter)  # type: ignore[union-attr]
    observer = SacredS3Observer("bench-sacred", "runs", region="us-east-1")
    observer.started_event(dict(EX_INFO), "main", {}, START, {}, {}, None)
    for size in sizes:
        observer.saved_metrics = {
            "loss": {
                "steps": list(range(size)),
                "values": [0.5] * size,
                "timestamps": [START.isoformat()] * size,
            }
        }
        before, began = counter.bytes, time.perf_counter()
        for beat in range(3):
            observer.log_metrics(batch(size // POINTS_PER_BEAT + beat), {})
            observer.heartbeat_event({}, "", START, None)
        print(f"sacred metrics {size:>9,} points: {(counter.bytes - before) / 3e3:10.1f} kB/beat "
              f"{(time.perf_counter() - began) / 3 * 1e3:8.1f} ms/beat")  # fmt: skip
    output_run(observer, counter, output_bytes, "sacred")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    output_bytes = 5_000_000 if args.quick else 20_000_000
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    from moto.server import ThreadedMotoServer

    from tests.support import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        ours(endpoint, sizes, output_bytes)
        sacreds(endpoint, sizes, output_bytes)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
