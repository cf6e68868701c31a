"""What the Prefect UI costs a run per beat: PrefectArtifactsObserver beside the obvious way.

Needs a Prefect server (``PREFECT_API_URL``; ``prefect server start`` in another shell). For
``--beats`` beats, each with new points of ``--metrics`` metrics and a progress value:

* ours: ``log_metrics`` + ``heartbeat_event`` of ``PrefectArtifactsObserver`` (at most one API
  call per beat: a PATCH of the table or of the progress bar);
* by hand: what a flow does with Prefect's own helpers, ``update_progress_artifact`` and a new
  version of a keyed ``create_table_artifact`` every beat.

    .venv/bin/python benchmarks/bench_prefect_ui.py [--beats 50] [--metrics 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from typing import Any


def _flow_run_id() -> Any:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="bench-prefect-ui")
    def bench() -> None:
        pass

    with get_client(sync_client=True) as client:
        return client.create_flow_run(bench).id


def ours(beats: int, metrics: int) -> tuple[list[float], int]:
    from prefect_sacred.observers.prefect_ui import PrefectArtifactsObserver

    observer = PrefectArtifactsObserver(min_interval=0)
    start = dt.datetime(2026, 1, 1)
    observer.started_event(
        ex_info={"name": "bench"},
        command="main",
        host_info={},
        start_time=start,
        config={},
        meta_info={"prefect": {"flow_run_id": str(_flow_run_id()), "flow_run_name": "bench"}},
        _id=1,
    )
    times = []
    for beat in range(beats):
        points = {f"m{i}": {"steps": [beat], "values": [1.0 / (beat + 1)]} for i in range(metrics)}
        began = time.perf_counter()
        observer.log_metrics(points, {})
        info = {"progress": {"total": beats}}
        observer.heartbeat_event(info=info, captured_out="", beat_time=start, result=None)
        times.append(time.perf_counter() - began)
    calls = observer.calls
    observer.join()
    return times, calls


def by_hand(beats: int, metrics: int) -> tuple[list[float], int]:
    from prefect import flow
    from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

    @flow(name="bench-prefect-ui-by-hand")
    def beating() -> list[float]:
        times: list[float] = []
        latest: dict[str, float] = {}
        progress = create_progress_artifact(0.0)
        for beat in range(beats):
            began = time.perf_counter()
            latest.update({f"m{i}": 1.0 / (beat + 1) for i in range(metrics)})
            update_progress_artifact(progress, 100.0 * (beat + 1) / beats)
            rows = [{"metric": name, "latest": value} for name, value in latest.items()]
            create_table_artifact(rows, key="bench-by-hand")
            times.append(time.perf_counter() - began)
        return times

    return beating(), 2 * beats + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beats", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=5)
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running Prefect server (prefect server start)")
    rows = [
        ("PrefectArtifactsObserver", *ours(args.beats, args.metrics)),
        ("by hand (progress + table helpers)", *by_hand(args.beats, args.metrics)),
    ]
    base = statistics.median(rows[0][1])
    print(f"{args.beats} beats, {args.metrics} metrics\n")
    print("| way | median ms / beat | max ms / beat | API calls / beat | median vs ours |")
    print("|---|---|---|---|---|")
    for name, times, calls in rows:
        median = statistics.median(times)
        print(
            f"| {name} | {median * 1e3:.1f} | {max(times) * 1e3:.1f} | {calls / args.beats:.2f} | "
            f"{median / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
