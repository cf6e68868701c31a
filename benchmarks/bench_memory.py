"""Benchmark: what 1,000,000 metric points cost in memory and time, ours beside Sacred 0.8.7.

Issue 8, item 7: an observer's memory must not grow with the run's metric history; 1M points
may cost at most 100 MB over a run without points (FileStorage and SQL).

Every case runs in a subprocess of its own, so its peak RSS (``ru_maxrss``) is its own. A case
is run twice, with ``--points`` points and with none, and the table reports the difference.

Two levels:

* **observer**: the observer alone, fed the points in beats of ``--beat-points`` (as a run's
  heartbeat hands them over: ``log_metrics`` then ``heartbeat_event``), then ``completed_event``.
  This is the item's target. ``durable points/s`` is the points divided by the CPU time spent
  in the observer's calls (CPU time, since wall time on a shared machine moves by 2x): when a
  call returns, its points are on disk (our journal append, or Sacred's ``metrics.json``
  rewrite).
* **run**: a whole run (ours: :class:`~prefect_sacred.core.run.Run` with its heartbeat thread,
  no Prefect flow; Sacred: ``Experiment.run``) logging the points with ``log_scalar`` as fast
  as it can, ``--beat-interval`` seconds between beats. Points waiting for a beat live in the
  run (packed, about 24 bytes a point, until each observer's thread takes them 50,000 at a
  time), so this also counts the run's own buffer; the same 100 MB bound applies. ``points/s``
  is the points divided by the whole run's CPU time (all its threads), final write included;
  the wall time is shown too.

Run: ``.venv/bin/python benchmarks/bench_memory.py`` (about 3-6 minutes on 2 cores);
``--points 200000`` for a quicker look.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = dt.datetime(2024, 1, 1, 12, 0, 0, 123456)
EX_INFO: dict[str, Any] = {
    "name": "bench",
    "base_dir": ".",
    "sources": [],
    "dependencies": [],
    "repositories": [],
    "mainfile": None,
}
HOST = {"hostname": "bench", "os": ["Linux", "Linux"], "python_version": "3.11", "cpu": "x"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- cases (each runs in its own process) --------------------------------------------------------


def _observer(kind: str, workdir: str) -> Any:
    if kind == "ours-file":
        from prefect_sacred.observers.file_storage import FileStorageObserver

        return FileStorageObserver(os.path.join(workdir, "runs"))
    if kind == "ours-sqlite":
        from prefect_sacred.observers.sql import SqlObserver

        return SqlObserver(f"sqlite:///{workdir}/runs.db")
    if kind == "sacred-file":
        from sacred.observers import FileStorageObserver as SacredFileStorage

        return SacredFileStorage(os.path.join(workdir, "runs"))
    if kind == "sacred-sqlite":
        from sacred.observers import SqlObserver as SacredSql

        return SacredSql(f"sqlite:///{workdir}/runs.db")
    raise ValueError(kind)


def observer_case(kind: str, points: int, beat_points: int, workdir: str) -> dict[str, float]:
    """Feed ``points`` points to one observer in beats; time only the observer's calls."""
    from prefect_sacred.core.metrics import linearize_metrics

    observer = _observer(kind, workdir)
    observer.started_event(
        ex_info=dict(EX_INFO),
        command="main",
        host_info=HOST,
        start_time=START,
        config={"lr": 0.1},
        meta_info={},
        _id=None,
    )
    base = START.timestamp()
    spent = cpu = 0.0
    beats = max(1, -(-points // beat_points))
    for beat in range(beats):
        first, last = beat * beat_points, min(points, (beat + 1) * beat_points)
        batch = linearize_metrics(
            [("loss", step, 1.0 / (step + 1), base + step * 0.001) for step in range(first, last)]
        )
        started, started_cpu = time.perf_counter(), time.process_time()
        observer.log_metrics(metrics_by_name=batch, info={"epoch": beat})
        observer.heartbeat_event(info={"epoch": beat}, captured_out="", beat_time=START, result=None)
        spent += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        del batch
    started, started_cpu = time.perf_counter(), time.process_time()
    observer.completed_event(stop_time=START, result=None)
    spent += time.perf_counter() - started
    cpu += time.process_time() - started_cpu
    return {"peak_rss_mb": peak_rss_mb(), "seconds": spent, "cpu_seconds": cpu}


def run_case(kind: str, points: int, beat_interval: float, workdir: str) -> dict[str, float]:
    """A whole run logging ``points`` points with ``log_scalar``; wall time of the run."""
    if kind.startswith("sacred"):
        from sacred import Experiment

        ex = Experiment("bench", save_git_info=False)
        ex.observers.append(_observer(kind, workdir))

        @ex.main
        def main(_run: Any) -> None:
            log = _run.log_scalar
            for step in range(points):
                log("loss", 1.0 / (step + 1))

        started, started_cpu = time.perf_counter(), time.process_time()
        ex.run(options={"--beat-interval": beat_interval, "--capture": "no", "--loglevel": "ERROR"})
        cpu = time.process_time() - started_cpu
        return {"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started, "cpu_seconds": cpu}

    from prefect_sacred.core.run import Run

    run = Run(
        experiment_info=dict(EX_INFO),
        host_info=HOST,
        meta_info={},
        config={"lr": 0.1},
        command="main",
        observers=[_observer(kind, workdir)],
        beat_interval=beat_interval,
        capture_mode="no",
    )
    started, started_cpu = time.perf_counter(), time.process_time()
    run.start()
    log = run.log_scalar
    for step in range(points):
        log("loss", 1.0 / (step + 1))
    run.complete(None)
    cpu = time.process_time() - started_cpu
    return {"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started, "cpu_seconds": cpu}


# --- the parent: subprocesses and tables ------------------------------------------------------------


def measure(args: argparse.Namespace, level: str, kind: str, points: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        command = [
            sys.executable,
            __file__,
            "--child",
            level,
            kind,
            str(points),
            workdir,
            "--beat-points",
            str(args.beat_points),
            "--beat-interval",
            str(args.beat_interval),
        ]
        env = {**os.environ, "HOME": workdir}  # the run's journal goes to this temporary home
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{level} {kind} failed:\n{done.stderr[-3000:]}")
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def table(args: argparse.Namespace, level: str, kinds: list[str], rate: str) -> list[str]:
    lines = [
        f"| {level} | RSS, no points (MB) | RSS, {args.points:,} points (MB) | difference (MB) "
        f"| wall s | CPU s | {rate} (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        empty = measure(args, level, kind, 0)
        full = measure(args, level, kind, args.points)
        difference = full["peak_rss_mb"] - empty["peak_rss_mb"]
        lines.append(
            f"| {kind} | {empty['peak_rss_mb']:.0f} | {full['peak_rss_mb']:.0f} | {difference:.0f} "
            f"| {full['seconds']:.2f} | {full['cpu_seconds']:.2f} "
            f"| {args.points / full['cpu_seconds']:,.0f} |"
        )
        print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument(
        "--beat-points",
        type=int,
        default=50_000,
        help="points per beat at the observer level (default 50,000)",
    )
    parser.add_argument(
        "--beat-interval", type=float, default=1.0, help="seconds between beats at the run level (default 1)"
    )
    parser.add_argument("--level", choices=["observer", "run", "both"], default="both")
    parser.add_argument(
        "--kinds",
        default="ours-file,sacred-file,ours-sqlite,sacred-sqlite",
        help="comma-separated cases (Sacred's file observer takes minutes at 1M points)",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("LEVEL", "KIND", "POINTS", "WORKDIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child is not None:
        level, kind, points, workdir = args.child
        case: Callable[..., dict[str, float]] = observer_case if level == "observer" else run_case
        extra_arg = args.beat_points if level == "observer" else args.beat_interval
        print(json.dumps(case(kind, int(points), extra_arg, workdir)))
        return
    kinds = args.kinds.split(",")
    out = [f"{args.points:,} points of one metric; Python {sys.version.split()[0]}", ""]
    if args.level in ("observer", "both"):
        out += [f"Observer alone, beats of {args.beat_points:,} points:", ""]
        out += [*table(args, "observer", kinds, "durable points/s"), ""]
    if args.level in ("run", "both"):
        out += [f"Whole run (`log_scalar`), a beat every {args.beat_interval:g} s:", ""]
        out += [*table(args, "run", kinds, "points/s"), ""]
    out.append("sacred-sqlite: Sacred's SqlObserver does not store metrics at all.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
