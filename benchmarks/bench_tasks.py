"""What making each trial an observed run costs: ``ex.task()`` beside a bare Prefect task.

Needs a Prefect server (``PREFECT_API_URL``; ``prefect server start`` in another shell). A flow
maps ``--trials`` trials of the same trivial body (three metric points, one print) over
Prefect's thread pool, ``--repeats`` times each way:

* bare: ``@task`` of the body;
* ours, unobserved: ``ex.task()`` with no observer (config assembly, hooks, capture off);
* ours, FileStorage: ``ex.task()`` with a ``FileStorageObserver`` (and the journal);
* ours, SQLite: ``ex.task()`` with a ``SqlObserver`` on SQLite.

``--runner ray`` runs the trials on prefect-ray's ``RayTaskRunner`` instead (a local Ray with
2 CPUs, started once; the ways then pay Ray's pickling and one worker process per CPU).
``--runner dask`` runs them on prefect-dask's ``DaskTaskRunner`` over a ``distributed.LocalCluster``
of 2 worker processes with 2 threads each, started once.

    .venv/bin/python benchmarks/bench_tasks.py [--trials 16] [--repeats 3] [--runner ray|dask]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_sacred import Experiment, FileStorageObserver, SqlObserver

ex = Experiment("bench_trial")


@ex.config
def cfg() -> None:
    lr = 0.1  # noqa: F841


def body(lr: float, _run: Any = None) -> float:
    for step in range(3):
        if _run is not None:
            _run.log_scalar("loss", lr * step, step)
    print(f"lr={lr}")
    return lr * 2


@ex.main
def train(lr: float, _run: Any) -> float:
    return body(lr, _run)


@task
def bare(lr: float) -> float:
    return body(lr)


def task_runner(kind: str, address: str | None = None) -> Any:
    """A new task runner of ``kind`` (a Dask one uses the cluster at ``address``)."""
    if kind == "ray":
        from prefect_ray import RayTaskRunner

        return RayTaskRunner()
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=4)


def sweep_seconds(trial_task: Any, trials: int, runner: str = "threads", address: str | None = None) -> float:
    lrs = [0.001 * (i + 1) for i in range(trials)]

    @flow(task_runner=task_runner(runner, address))
    def sweep() -> list[float]:
        return [future.result() for future in trial_task.map(lr=lrs)]

    began = time.perf_counter()
    sweep()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner", choices=["threads", "ray", "dask"], default="threads")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running Prefect server (prefect server start)")
    os.environ.setdefault("PREFECT_SACRED_UI", "off")
    workdir = tempfile.mkdtemp(prefix="bench-tasks-")
    ex.beat_interval = 10.0
    ways: dict[str, tuple[Any, list[Any]]] = {
        "bare Prefect task": (bare, []),
        "ex.task(), no observer": (None, []),
        "ex.task(), FileStorageObserver": (None, [FileStorageObserver(os.path.join(workdir, "runs"))]),
        "ex.task(), SqlObserver (SQLite)": (None, [SqlObserver(f"sqlite:///{workdir}/runs.db")]),
    }
    if args.runner == "ray":
        import ray

        # Started here, once: RayTaskRunner uses it and leaves it running between sweeps.
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False)
    cluster = None
    if args.runner == "dask":
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        )
    address = cluster.scheduler_address if cluster is not None else None
    try:
        measure(args, ways, address)
    finally:
        if cluster is not None:
            cluster.close()


def measure(args: argparse.Namespace, ways: dict[str, tuple[Any, list[Any]]], address: str | None) -> None:
    """Run the sweeps round robin and print the table."""
    # Warm up Prefect's client and the flow machinery (Ray's or Dask's workers).
    sweep_seconds(bare, 2, args.runner, address)
    times: dict[str, list[float]] = {name: [] for name in ways}
    tasks = {name: given if given is not None else ex.task() for name, (given, _) in ways.items()}
    for _ in range(args.repeats):  # round robin: a shared machine's drift hits every way alike
        for name, (_, observers) in ways.items():
            ex.observers[:] = observers
            times[name].append(sweep_seconds(tasks[name], args.trials, args.runner, address))
    results = {name: statistics.median(each) / args.trials for name, each in times.items()}
    base = results["bare Prefect task"]
    where = {
        "ray": "a local Ray (2 CPUs)",
        "dask": "a Dask LocalCluster (2 processes x 2 threads)",
    }.get(args.runner, "a 4-thread pool")
    print(f"## {args.trials} trials on {where}, median of {args.repeats} sweeps\n")
    print("| way | per trial (ms) | over bare (ms) | ratio |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {(seconds - base) * 1e3:+.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
