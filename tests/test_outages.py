"""Outages end to end: real experiment runs whose backend goes away, through a TCP fault proxy.

Each test runs an experiment (a Prefect flow, fd capture, the heartbeat thread) with a
proxied ``SqlObserver`` (PostgreSQL, MariaDB) or ``MongoObserver`` (the Mongo wire server)
beside ``FileStorageObserver`` (and ``TinyDbObserver``), and switches the proxy from inside
the main function, so the fault lands at a known point of the run. Timeouts are 1 s, retries
start at 0.1 s and pause at most 0.5 s, beats come every 0.2 s: an outage of 30 beats (five
minutes at the default 10 s beat) takes six seconds.

What a user would notice is asserted: every metric point once and in order, every printed line,
COMPLETED, heartbeats that resume, the other observers on time, a bounded exit that says what
to run, and ``prefect-sacred sync`` delivering the rest once.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment
from prefect_sacred.testing import RunRecord
from tests.backends.file_storage import FileStorageBackend
from tests.backends.tinydb import TinyDbBackend
from tests.servers.tcp_proxy import ProxiedBackend
from tests.support import REPO, subprocess_env, wait_for

BEAT = 0.2  # seconds between heartbeats
TIMEOUT = 1.0  # connect and read timeouts of the proxied observer
STEP = 0.1  # seconds between the steps of the main functions
PASSWORD = "Pw/with#odd?chars"  # PostgreSQL's trust auth ignores it; it must never be shown


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def expected_output(steps: int) -> str:
    return "".join(f"step {step}\n" for step in range(steps))


def loss(step: int) -> float:
    return 1.0 / (step + 1)


# --- the proxied backends -------------------------------------------------------------------------


@dataclass
class Proxied:
    """One proxied backend: builds its observer (through the proxy), reads runs back directly."""

    kind: str
    backend: ProxiedBackend
    _engine: Any = None
    db_name: str = "outages"

    @property
    def proxy(self) -> Any:
        return self.backend.proxy

    @property
    def observer_name(self) -> str:
        return "MongoObserver" if self.kind == "mongo" else "SqlObserver"

    def observer(self) -> Any:
        if self.kind == "mongo":
            from prefect_sacred import MongoObserver

            ms = int(TIMEOUT * 1000)
            return MongoObserver(
                self.backend.url,
                db_name=self.db_name,
                serverSelectionTimeoutMS=ms,
                connectTimeoutMS=ms,
                socketTimeoutMS=ms,
            )
        import sqlalchemy as sa

        from prefect_sacred import SqlObserver

        url = self.backend.url
        if url.startswith("postgresql"):
            url = sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
        return SqlObserver(url, connect_timeout=TIMEOUT, read_timeout=TIMEOUT)

    def record(self, run_id: Any) -> RunRecord:
        """The run as the backend holds it, read without the proxy."""
        if self.kind == "mongo":
            from tests.backends.mongo import read_run as read_mongo

            return read_mongo(self.backend.extra["server"].client[self.db_name], run_id)
        import sqlalchemy as sa

        from tests.backends.sql import read_run as read_sql

        if self._engine is None:
            self._engine = sa.create_engine(self.backend.direct_url)
        return read_sql(self._engine, run_id)

    def heartbeat(self, run_id: Any) -> Any:
        """The run's stored heartbeat time, read without the proxy (cheaper than a record)."""
        if self.kind == "mongo":
            doc = self.backend.extra["server"].client[self.db_name].runs.find_one({"_id": run_id})
            return (doc or {}).get("heartbeat")
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.backend.direct_url)
        with self._engine.connect() as conn:
            query = sa.text("SELECT heartbeat FROM run WHERE run_id = :id")
            return conn.execute(query, {"id": str(run_id)}).scalar()

    def between_beats(self, run_id: Any) -> None:
        """Return just after the backend stored a beat, so that a fault set at once meets no
        write in flight: a write stored whose answer is lost is the subject of test 5."""
        first = self.heartbeat(run_id)
        wait_for(lambda: self.heartbeat(run_id) != first, timeout=5, interval=0.01, what="a beat stored")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "mongo"])
def proxied(request: pytest.FixtureRequest) -> Iterator[Proxied]:
    fixture = {"postgresql": "pg_proxy", "mariadb": "mariadb_proxy", "mongo": "mongo_proxy"}[request.param]
    target = Proxied(request.param, request.getfixturevalue(fixture))
    yield target
    target.proxy.restore()
    target.close()


@pytest.fixture(autouse=True)
def journals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journals of this test's runs only (``sync --all`` sees nothing else)."""
    root = tmp_path / "journals"
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(root))
    return root


@pytest.fixture(autouse=True)
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries from 0.1 s, pausing at most 0.5 s (the defaults: 0.2 s up to 5 s)."""
    from prefect_sacred.core.fanout import ObserverFanout

    init = ObserverFanout.__init__

    @functools.wraps(init)
    def fast(self: ObserverFanout, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("retry_interval", 0.1)
        kwargs.setdefault("max_retry_interval", 0.5)
        init(self, *args, **kwargs)

    monkeypatch.setattr(ObserverFanout, "__init__", fast)


def file_storage(root: Path) -> tuple[Any, FileStorageBackend]:
    """A FileStorageObserver in ``root``, and the contract suite's reader of it."""
    from prefect_sacred import FileStorageObserver

    reader = FileStorageBackend()
    reader.basedir = root
    return FileStorageObserver(root), reader


def tiny_db(root: Path) -> tuple[Any, TinyDbBackend]:
    """A TinyDbObserver in ``root``, and the contract suite's reader of it."""
    from prefect_sacred import TinyDbObserver

    reader = TinyDbBackend()
    reader.basedir = root
    return TinyDbObserver(root), reader


def experiment(name: str, observers: list[Any], join_timeout: float) -> Experiment:
    ex = Experiment(name)
    ex.observers += observers
    ex.beat_interval = BEAT
    ex.join_timeout = join_timeout
    return ex


@dataclass
class Timeline:
    """What the main function saw, in ``time.monotonic()`` seconds unless said otherwise."""

    steps: int = 0
    run_id: Any = None
    marks: dict[str, float] = field(default_factory=dict)
    #: During the outage: (seconds since FileStorage's last heartbeat, its output had the line
    #: printed 3 beats earlier).
    other_observer: list[tuple[float, bool]] = field(default_factory=list)
    #: Lines of output the proxied backend held when the proxy was restored.
    backend_lines_at_restore: int = -1


class LineCatcher(logging.Handler):
    """Collects the WARNING and ERROR lines of the run's Prefect logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def run_log() -> Iterator[LineCatcher]:
    from prefect.logging import configuration

    if not configuration.PROCESS_LOGGING_CONFIG:  # its first set-up replaces every handler
        configuration.setup_logging()
    catcher = LineCatcher()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect_sacred")]
    for logger in loggers:
        logger.addHandler(catcher)
    yield catcher
    for logger in loggers:
        logger.removeHandler(catcher)


# --- 1. an outage in the middle of a run ----------------------------------------------------------


def test_a_mid_run_outage_loses_nothing_and_delays_no_other_observer(
    proxied: Proxied, tmp_path: Path
) -> None:
    """Hold for 15 beats, drop for 15 more (3 s each), restore: the backend ends up with the whole run."""
    stored, files = file_storage(tmp_path / "runs")
    ex = experiment("outage_mid_run", [proxied.observer(), stored], join_timeout=20)
    seen = Timeline()

    def check_the_other_observer(run_id: Any, step: int) -> None:
        record = files.record(run_id)
        assert record.heartbeat is not None
        lag = (utcnow() - record.heartbeat).total_seconds()
        seen.other_observer.append((lag, f"step {step - 3 * int(BEAT / STEP)}\n" in record.captured_out))

    @ex.main
    def main(_run: Any = None) -> int:
        def step_once() -> None:
            _run.log_scalar("loss", loss(seen.steps), seen.steps)
            print(f"step {seen.steps}")
            seen.steps += 1
            time.sleep(STEP)

        for _ in range(10):
            step_once()
        proxied.between_beats(_run._id)
        seen.marks["hold"] = time.monotonic()
        proxied.proxy.hold()
        for index in range(60):
            if index == 30:
                seen.marks["drop"] = time.monotonic()
                proxied.proxy.drop()
            if index % 10 == 9:
                check_the_other_observer(_run._id, seen.steps - 1)
            step_once()
        seen.backend_lines_at_restore = proxied.record(_run._id).captured_out.count("\n")
        restored_at = utcnow()
        seen.marks["restore"] = time.monotonic()
        proxied.proxy.restore()

        def resumed() -> bool:
            beat = proxied.record(_run._id).heartbeat
            return beat is not None and beat > restored_at

        while time.monotonic() - seen.marks["restore"] < 15:  # steps go on while it recovers
            step_once()
            if resumed():
                seen.marks["resumed"] = time.monotonic()
                break
        for _ in range(5):
            step_once()
        return seen.steps

    run = ex.run()
    steps = seen.steps
    record = proxied.record(run._id)
    assert record.status == "COMPLETED" and record.result == steps
    assert record.metrics["loss"]["steps"] == list(range(steps))  # once each, in order
    assert record.metrics["loss"]["values"] == [loss(step) for step in range(steps)]
    assert record.captured_out == expected_output(steps)
    assert files.record(run._id).captured_out == expected_output(steps)

    # The outage was real: the backend had missed the beats of the outage when it came back.
    assert seen.backend_lines_at_restore < 10 + 60 - 10, seen.backend_lines_at_restore
    # Heartbeats resumed while the run went on, not only at its end.
    assert "resumed" in seen.marks, "the backend's heartbeat never moved after the restore"
    recovery = seen.marks["resumed"] - seen.marks["restore"]
    assert recovery < 5, f"heartbeats resumed {recovery:.1f} s after the restore"
    assert record.heartbeat is not None and record.stop_time is not None
    # FileStorage kept its beats on time all through the outage (beats every 0.2 s).
    lags = [lag for lag, _ in seen.other_observer]
    assert len(lags) == 6 and max(lags) < 1.5, seen.other_observer
    assert all(fresh for _, fresh in seen.other_observer), seen.other_observer
    assert run.observer_errors.get(proxied.observer_name, 0) >= 1  # it did fail meanwhile
    outage = seen.marks["restore"] - seen.marks["hold"]
    print(
        f"\n{proxied.kind}: outage {outage:.1f} s ({outage / BEAT:.0f} beats), heartbeats resumed "
        f"{recovery:.2f} s after the restore, FileStorage lag at most {max(lags):.2f} s, "
        f"{steps} points and lines, {run.observer_errors} failed attempts"
    )


# --- 2. the backend is down when the run ends ----------------------------------------------------


@pytest.mark.slow
def test_a_backend_down_at_the_end_bounds_the_exit_and_sync_delivers_the_rest_once(
    proxied: Proxied, tmp_path: Path, journals: Path, run_log: LineCatcher
) -> None:
    stored, files = file_storage(tmp_path / "runs")
    join_timeout = 2.0
    ex = experiment("outage_at_the_end", [proxied.observer(), stored], join_timeout)
    seen = Timeline()
    steps = 30

    @ex.main
    def main(_run: Any = None) -> dict[str, float]:
        for step in range(steps):
            if step == 20:  # the last third, its beats and the end meet a backend that is gone
                proxied.between_beats(_run._id)
                proxied.proxy.drop()
            _run.log_scalar("loss", loss(step), step)
            print(f"step {step}")
            time.sleep(STEP / 2)
        seen.marks["returned"] = time.monotonic()
        return {"best": loss(steps - 1)}

    run = ex.run()
    exit_took = time.monotonic() - seen.marks["returned"]
    assert exit_took < join_timeout + 4, f"the run took {exit_took:.1f} s to exit after its main returned"
    assert run.status == "COMPLETED"
    assert files.record(run._id).status == "COMPLETED"  # the other observer got everything

    lines = [line for line in run_log.lines if "not delivered" in line]
    assert len(lines) == 1, run_log.lines
    [line] = lines
    journal = run.journal_path
    assert journal is not None and Path(journal).is_dir(), "the journal was not kept"
    assert line.startswith(f"observer {proxied.observer_name}: ") and "completed_event" in line, line
    assert line.endswith(f"`prefect-sacred sync {journal}`"), line
    assert "\n" not in line and PASSWORD not in line and "Pw" not in line

    proxied.proxy.restore()
    before = proxied.record(run._id)
    assert before.status == "RUNNING"
    assert len(before.metrics["loss"]["steps"]) < steps  # the journal holds the rest

    sync = [str(Path(sys.executable).parent / "prefect-sacred"), "sync"]
    env = subprocess_env(PREFECT_SACRED_JOURNAL_DIR=str(journals))
    began = time.monotonic()
    done = subprocess.run([*sync, journal], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    sync_took = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{proxied.observer_name}: delivered" in done.stdout and "journal removed" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    record = proxied.record(run._id)
    assert record.status == "COMPLETED" and record.result == {"best": loss(steps - 1)}
    assert record.metrics["loss"]["steps"] == list(range(steps))
    assert record.metrics["loss"]["values"] == [loss(step) for step in range(steps)]
    assert record.captured_out == expected_output(steps)
    assert not Path(journal).exists()

    again = subprocess.run([*sync, "--all"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no journals" in again.stdout
    assert proxied.record(run._id) == record  # nothing delivered twice
    print(
        f"\n{proxied.kind}: exit {exit_took:.2f} s after the main function returned "
        f"(join_timeout {join_timeout:.0f} s); sync took {sync_took:.2f} s"
    )


# --- 3. a backend holding at the start: tests/test_timeouts.py covers it ------------------------
# (test_sql_start_against_a_holding_database_fails_within_seconds,
# test_mongo_start_against_a_holding_server_fails_within_seconds and
# test_a_run_against_a_holding_database_fails_at_its_start_within_seconds).


# --- 4. the final event meets a holding backend --------------------------------------------------


def test_a_backend_holding_the_final_event_keeps_no_other_observer_running(
    proxied: Proxied, tmp_path: Path
) -> None:
    (stored, files), (tiny_stored, tiny) = file_storage(tmp_path / "runs"), tiny_db(tmp_path / "tinydb")
    join_timeout = 4.0
    ex = experiment("outage_final_event", [proxied.observer(), stored, tiny_stored], join_timeout)
    seen = Timeline()
    steps = 10
    finished: dict[str, float] = {}
    watching = threading.Event()

    def watch(name: str, reader: Any) -> None:
        while not watching.is_set():  # set once the run's id is known
            time.sleep(0.01)
        done = lambda: reader.record(seen.run_id).status == "COMPLETED"  # noqa: E731
        wait_for(done, timeout=3 * join_timeout, interval=0.05, what=f"{name} to record COMPLETED")
        finished[name] = time.monotonic() - seen.marks["returned"]

    @ex.main
    def main(_run: Any = None) -> int:
        seen.run_id = _run._id
        for step in range(steps):
            _run.log_scalar("loss", loss(step), step)
            print(f"step {step}")
            time.sleep(STEP / 2)
        time.sleep(2 * BEAT)  # delivered up to here
        proxied.between_beats(_run._id)
        proxied.proxy.hold()
        seen.marks["returned"] = time.monotonic()
        watching.set()
        return steps

    watchers = [
        threading.Thread(target=watch, args=(name, reader), daemon=True)
        for name, reader in (("FileStorage", files), ("TinyDB", tiny))
    ]
    for watcher in watchers:
        watcher.start()
    run = ex.run()
    exit_took = time.monotonic() - seen.marks["returned"]
    for watcher in watchers:
        watcher.join(3 * join_timeout)

    assert set(finished) == {"FileStorage", "TinyDB"}, finished
    assert max(finished.values()) < join_timeout / 2, f"COMPLETED only after {finished} s"
    assert join_timeout - 0.5 < exit_took < join_timeout + 4, exit_took  # it did wait, no longer
    for reader in (files, tiny):
        record = reader.record(run._id)
        assert record.metrics["loss"]["steps"] == list(range(steps))
        assert record.captured_out == expected_output(steps)
    assert proxied.record(run._id).status == "RUNNING"  # the held backend: kept in the journal

    proxied.proxy.restore()
    from prefect_sacred.cli import main as cli

    journal = run.journal_path
    assert journal is not None
    assert cli(["sync", journal]) == 0
    record = proxied.record(run._id)
    assert record.status == "COMPLETED" and record.metrics["loss"]["steps"] == list(range(steps))
    assert record.captured_out == expected_output(steps)
    print(
        f"\n{proxied.kind}: FileStorage and TinyDB COMPLETED "
        + ", ".join(f"{name} {took:.2f} s" for name, took in finished.items())
        + f" after the main function returned; the run exited after {exit_took:.2f} s "
        f"(join_timeout {join_timeout:.0f} s)"
    )


# --- 5. the answer to a write that was stored is lost --------------------------------------------


class _Sink:
    """Stands in for the socket a relay writes to, so :class:`LoseOneAnswer` sees the bytes."""

    def __init__(self, sock: Any, send: Callable[[Any, bytes], None]) -> None:
        self.sock, self.send = sock, send

    def sendall(self, data: bytes) -> None:
        self.send(self.sock, data)


class LoseOneAnswer:
    """Makes ``proxy`` lose the server's answers on the connection of one request.

    Once :meth:`arm` is called, the request that contains the last of ``markers`` (after
    requests containing the ones before it) reaches the server, which stores it; its answer,
    and anything after it on that connection, never comes back: the client times out, as when
    a connection dies just after a commit. ``then`` is called once that request is sent.
    Install before the observer connects.
    """

    def __init__(self, proxy: Any, *markers: bytes, then: Callable[[], None] | None = None) -> None:
        self.markers = list(markers)
        self.then = then
        self.armed = False
        self.hits = 0
        self._muted: set[int] = set()
        relay = proxy._relay

        def relay_through(pair: Any, source: Any, sink: Any) -> None:
            if sink is None:
                relay(pair, source, sink)
            elif source is pair.client:
                relay(pair, source, _Sink(sink, lambda sock, data: self._to_server(pair, sock, data)))
            else:
                relay(pair, source, _Sink(sink, lambda sock, data: self._to_client(pair, sock, data)))

        proxy._relay = relay_through

    def arm(self) -> None:
        self.armed = True

    def _to_server(self, pair: Any, sock: Any, data: bytes) -> None:
        if self.armed and self.markers and self.markers[0] in data:
            self.markers.pop(0)
            if not self.markers:
                self._muted.add(id(pair))
                self.armed = False
                self.hits += 1
                sock.sendall(data)
                if self.then is not None:
                    self.then()
                return
        sock.sendall(data)

    def _to_client(self, pair: Any, sock: Any, data: bytes) -> None:
        if id(pair) not in self._muted:
            sock.sendall(data)


# What a metric write of the metric "loss" looks like on the wire. The metric's name, not the
# statement: psycopg prepares a statement it has run five times and then sends only its name.
METRIC_WRITE = {
    "postgresql": (b"loss", b"COMMIT"),
    "mariadb": (b"INSERT INTO metric", b"COMMIT"),
    "mongo": (b"$push",),
}


@pytest.mark.parametrize(
    "proxied",
    [
        "postgresql",
        "mariadb",
        "mongo",
    ],
    indirect=True,
)
def test_a_stored_write_whose_answer_is_lost_is_not_stored_twice(proxied: Proxied, tmp_path: Path) -> None:
    markers = METRIC_WRITE[proxied.kind]
    fault = LoseOneAnswer(proxied.proxy, *markers)
    stored, _ = file_storage(tmp_path / "runs")
    ex = experiment("outage_lost_answer", [proxied.observer(), stored], join_timeout=20)
    steps = 30

    @ex.main
    def main(_run: Any = None) -> int:
        for step in range(steps):
            if step == 10:
                fault.arm()  # the next beat's metric write is stored, its answer lost
            _run.log_scalar("loss", loss(step), step)
            print(f"step {step}")
            time.sleep(STEP)
        return steps

    run = ex.run()
    assert fault.hits == 1, "the fault never met a metric write"
    assert run.observer_errors.get(proxied.observer_name, 0) >= 1
    record = proxied.record(run._id)
    assert record.status == "COMPLETED"
    assert record.metrics["loss"]["steps"] == list(range(steps))
    assert record.metrics["loss"]["values"] == [loss(step) for step in range(steps)]
    assert record.captured_out == expected_output(steps)


@pytest.mark.parametrize("proxied", ["postgresql", "mariadb", "mongo"], indirect=True)
def test_sync_after_a_stored_write_whose_answer_was_lost_stores_it_once(
    proxied: Proxied, tmp_path: Path
) -> None:
    """The metric write is stored, its answer lost, then the backend goes away until the end."""
    from prefect_sacred.cli import main as cli

    markers = METRIC_WRITE[proxied.kind]
    fault = LoseOneAnswer(
        proxied.proxy, *markers, then=lambda: threading.Timer(0.3, proxied.proxy.drop).start()
    )
    stored, _ = file_storage(tmp_path / "runs")
    ex = experiment("outage_lost_answer_sync", [proxied.observer(), stored], join_timeout=2)
    steps = 20

    @ex.main
    def main(_run: Any = None) -> int:
        for step in range(steps):
            if step == 10:
                fault.arm()
            _run.log_scalar("loss", loss(step), step)
            print(f"step {step}")
            time.sleep(STEP)
        return steps

    run = ex.run()
    assert fault.hits == 1, "the fault never met a metric write"
    journal = run.journal_path
    assert journal is not None and Path(journal).is_dir()
    proxied.proxy.restore()
    assert cli(["sync", journal]) == 0
    record = proxied.record(run._id)
    assert record.status == "COMPLETED"
    assert record.metrics["loss"]["steps"] == list(range(steps))
    assert record.captured_out == expected_output(steps)
