"""Benchmark: the cost of a heartbeat as captured output grows from 0 to 20 MB, for every observer.

Issue 7's target: for every observer, a beat at 20 MB of output costs at most 2x a beat at 0 MB.
Each beat adds 64 KB of output; beats are timed at 0, 5, 10 and 20 MB already captured,
through ``Run.beat``, so the run's own output buffer and the output delta it hands observers
are measured with each observer:

* FileStorageObserver, TinyDbObserver, SqlObserver on SQLite (and on PostgreSQL/MariaDB when
  they run on 127.0.0.1), MongoObserver over the test wire server (mongomock behind TCP);
* the same FileStorageObserver behind a QueueObserver (the beat is queued; the queue is drained
  after each timed beat, untimed, so beats do not pile up);
* for reference, Sacred 0.8.7's FileStorageObserver ``heartbeat_event`` given the same
  cumulative string (Sacred's ``Run`` builds it by concatenation, a copy per beat, not counted).

Median and mean of ``--beats`` beats at each size. Run from the repository root:
``.venv/bin/python benchmarks/bench_output.py`` (a few minutes; ``--quick`` for 0 and 20 MB only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefect_sacred.core.run import Run
from prefect_sacred.observers.file_storage import FileStorageObserver
from prefect_sacred.observers.queue import QueueObserver
from tests.support import InjectedOutput

CHUNK = 64 * 1024
MB = 2**20


def through_run(
    observer: Any, sizes: list[int], beats: int, settle: Callable[[], None] = lambda: None
) -> dict[int, list[float]]:
    """Beat times (s) at each output size, for one run recorded by ``observer``."""
    run = Run(
        experiment_info={"name": "bench", "base_dir": tempfile.gettempdir(), "sources": []},
        host_info={},
        meta_info={},
        config={},
        command="main",
        observers=[observer],
        beat_interval=0,
        capture_mode="no",
    )
    run.start()
    if run.start_error is not None:
        raise run.start_error
    capture = run._capture = InjectedOutput()  # type: ignore[assignment]
    times: dict[int, list[float]] = {}
    for size in sizes:
        while len(run.captured_out) < size * MB:
            capture.pending = "x" * (MB - 1) + "\n"
            run.beat()
            settle()
        times[size] = []
        for _ in range(beats):
            capture.pending = "y" * (CHUNK - 1) + "\n"
            began = time.perf_counter()
            run.beat()
            times[size].append(time.perf_counter() - began)
            settle()
    run.complete(None)
    return times


def sacred_file_storage(sizes: list[int], beats: int) -> dict[int, list[float]]:
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
    times: dict[int, list[float]] = {}
    for size in sizes:
        while len(output) < size * MB:
            output += "x" * (MB - 1) + "\n"
            observer.heartbeat_event(info={}, captured_out=output, beat_time=now, result=None)
        times[size] = []
        for _ in range(beats):
            output += "y" * (CHUNK - 1) + "\n"
            began = time.perf_counter()
            observer.heartbeat_event(info={}, captured_out=output, beat_time=now, result=None)
            times[size].append(time.perf_counter() - began)
    return times


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _server_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    import sqlalchemy as sa

    name = f"ps_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()

    return str(sa.make_url(admin_url).set(database=name).render_as_string(False)), drop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--beats", type=int, default=15, help="timed beats at each size (default 15)")
    parser.add_argument("--quick", action="store_true", help="only 0 and 20 MB")
    args = parser.parse_args()
    sizes = [0, 20] if args.quick else [0, 5, 10, 20]

    from prefect_sacred.observers.mongo import MongoObserver
    from prefect_sacred.observers.sql import SqlObserver
    from prefect_sacred.observers.tinydb import TinyDbObserver
    from tests.servers.mongo_wire import MongoWireServer

    results: dict[str, dict[int, list[float]]] = {}
    results["FileStorageObserver"] = through_run(FileStorageObserver(tempfile.mkdtemp()), sizes, args.beats)
    queue = QueueObserver(FileStorageObserver(tempfile.mkdtemp()), interval=0.01, retry_interval=0.01)

    def drained() -> None:
        deadline = time.monotonic() + 60
        while (queue._events or queue._busy) and time.monotonic() < deadline:
            time.sleep(0.001)

    results["QueueObserver(FileStorage)"] = through_run(queue, sizes, args.beats, settle=drained)
    results["TinyDbObserver"] = through_run(TinyDbObserver(tempfile.mkdtemp()), sizes, args.beats)
    sqlite_url = f"sqlite:///{tempfile.mkdtemp()}/runs.db"
    results["SqlObserver (SQLite)"] = through_run(SqlObserver(sqlite_url), sizes, args.beats)
    for label, admin_url, port in (
        ("SqlObserver (PostgreSQL)", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", 5432),
        ("SqlObserver (MariaDB)", "mysql+pymysql://root@127.0.0.1:3306/test", 3306),
    ):
        if not _port_open(port):
            print(f"({label}: no server on 127.0.0.1:{port}, left out)")
            continue
        url, drop = _server_database(admin_url)
        try:
            observer = SqlObserver(url)
            results[label] = through_run(observer, sizes, args.beats)
            observer.engine.dispose()
        finally:
            drop()
    server = MongoWireServer()
    server.start()
    try:
        results["MongoObserver (wire server)"] = through_run(
            MongoObserver(url=server.uri, db_name="bench"), sizes, args.beats
        )
    finally:
        server.stop()
    results["Sacred 0.8.7 FileStorage (reference)"] = sacred_file_storage(sizes, args.beats)

    header = " | ".join(f"{size} MB median / mean (ms)" for size in sizes)
    print(f"| observer | {header} | 20 MB ÷ 0 MB (median) | 20 MB ÷ 0 MB (mean) |")
    print("|---|" + "---|" * (len(sizes) + 2))
    for name, times in results.items():
        cells = " | ".join(
            f"{statistics.median(times[s]) * 1e3:.2f} / {statistics.mean(times[s]) * 1e3:.2f}" for s in sizes
        )
        median_ratio = statistics.median(times[20]) / statistics.median(times[0])
        mean_ratio = statistics.mean(times[20]) / statistics.mean(times[0])
        print(f"| {name} | {cells} | {median_ratio:.2f}x | {mean_ratio:.2f}x |")


if __name__ == "__main__":
    main()
