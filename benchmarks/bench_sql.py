"""SqlObserver throughput: metric points per second made durable, and heartbeat cost.

Calls the observer's events as ``Run`` does (``log_metrics`` then ``heartbeat_event``, one
transaction per beat), on SQLite (a file, default synchronous settings) and PostgreSQL (a
database created for the run and dropped after). Usage::

    python benchmarks/bench_sql.py [--points 200000] [--per-beat 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from prefect_sacred import SqlObserver

HOST = {"hostname": "bench", "cpu": "cpu", "os": ["Linux", "Linux"], "python_version": "3.11"}
EX_INFO = {"name": "bench", "base_dir": "/", "sources": [], "dependencies": [], "repositories": []}


def beat(observer: SqlObserver, start_step: int, count: int) -> None:
    now = dt.datetime.now()
    steps = list(range(start_step, start_step + count))
    observer.log_metrics(
        {
            "loss": {
                "name": "loss",
                "steps": steps,
                "values": [1.0 / (s + 1) for s in steps],
                "timestamps": [now] * count,
            }
        },
        {},
    )
    observer.heartbeat_event(info={"step": start_step}, captured_out="", beat_time=now, result=None)


def measure(url: str, points: int, per_beat: int) -> None:
    observer = SqlObserver(url)
    observer.started_event(
        ex_info=EX_INFO,
        command="bench",
        host_info=HOST,
        start_time=dt.datetime.now(),
        config={},
        meta_info={},
        _id=None,
    )
    began = time.perf_counter()
    for start in range(0, points, per_beat):
        beat(observer, start, per_beat)
    elapsed = time.perf_counter() - began
    name = observer.engine.dialect.name
    print(
        f"{name:10s} {points:>8d} points in {points // per_beat} beats: "
        f"{points / elapsed:>10,.0f} points/s durable"
    )
    # A heartbeat with nothing new, and one with 100 new points, once >= 100k points are stored.
    for new in (0, 100):
        timings = []
        for _ in range(20):
            tick = time.perf_counter()
            beat(observer, points, new)
            timings.append(time.perf_counter() - tick)
        timings.sort()
        print(
            f"{name:10s} heartbeat with {new:>3d} new points, {points} stored: "
            f"median {timings[10] * 1000:.2f} ms"
        )
    observer.completed_event(stop_time=dt.datetime.now(), result=None)
    observer.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--per-beat", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.points, args.per_beat)
    admin = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    database = f"ps_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {database}"))
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {exc.orig}")
        return
    try:
        measure(
            sa.make_url(admin).set(database=database).render_as_string(False),
            args.points,
            args.per_beat,
        )
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        engine.dispose()


if __name__ == "__main__":
    main()
