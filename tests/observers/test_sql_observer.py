"""SqlObserver on SQLite, PostgreSQL and MariaDB: Sacred's schema, ids, concurrency, errors.

Events are called directly, as ``Run`` calls them (keyword arguments). Server databases are
created per test module with unique names and dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from prefect_sacred import OutputDelta, SqlObserver
from prefect_sacred.observers.registry import observer_from_url
from prefect_sacred.observers.sql import SqlObserverError
from prefect_sacred.observers.sql import schema as sql_schema
from tests.backends.sql import MARIADB_ADMIN, PG_ADMIN, drop_database, read_run
from tests.support import PYTHON, port_open, service_missing, subprocess_env

T1 = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
T2 = dt.datetime(2024, 1, 2, 3, 4, 9, 500000)
HOST = {
    "hostname": "box",
    "cpu": "cpu",
    "os": ["Linux", "Linux-6.1-x86_64"],
    "python_version": "3.11.7",
}


def ex_info(base: Path) -> dict[str, Any]:
    (base / "train.py").write_text("print('train')\n")
    md5 = hashlib.md5((base / "train.py").read_bytes()).hexdigest()
    return {
        "name": "exp",
        "base_dir": str(base),
        "sources": [["train.py", md5]],
        "dependencies": ["numpy==2.0.0", "opentelemetry-exporter-otlp-proto-http==1.27.0"],
        "repositories": [{"url": "git@example.com:x.git", "commit": "a" * 40, "dirty": False}],
        "mainfile": "train.py",
    }


def start(observer: SqlObserver, base: Path, _id: Any = None, **config: Any) -> Any:
    return observer.started_event(
        ex_info=ex_info(base),
        command="train",
        host_info=HOST,
        start_time=T1,
        config={"lr": 0.1, **config},
        meta_info={"comment": "first", "priority": 2.0},
        _id=_id,
    )


def _server_url(admin: str, port: int) -> Iterator[str]:
    if not port_open("127.0.0.1", port):
        service_missing(f"no database server on 127.0.0.1:{port}")
    database = f"ps_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    engine.dispose()
    yield sa.make_url(admin).set(database=database).render_as_string(False)
    drop_database(admin, database)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
    elif request.param == "postgresql":
        yield from _server_url(PG_ADMIN, 5432)
    else:
        yield from _server_url(MARIADB_ADMIN, 3306)


def test_sacreds_own_models_read_a_completed_run(db_url: str, tmp_path: Path) -> None:
    from sacred.observers import sql_bases

    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    observer.heartbeat_event(info={"a": 1}, captured_out="out\n", beat_time=T2, result=None)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"\x00\x01")
    observer.artifact_event(name="model.bin", filename=str(artifact))
    observer.resource_event(filename=str(tmp_path / "train.py"))
    observer.resource_event(filename=str(tmp_path / "train.py"))  # recorded once
    observer.completed_event(stop_time=T2, result=0.75)
    with sa.orm.Session(observer.engine) as session:
        run = session.query(sql_bases.Run).filter_by(run_id=str(_id)).one()
        doc = run.to_json()
    assert doc["_id"] == "1" and doc["status"] == "COMPLETED" and doc["result"] == 0.75
    assert doc["config"] == {"lr": 0.1}
    assert doc["meta"] == {"comment": "first", "priority": 2.0}
    assert doc["captured_out"] == "out\n"
    assert doc["start_time"] == T1 and doc["stop_time"] == T2
    assert doc["host"] == {k: HOST[k] for k in ("hostname", "cpu", "os", "python_version")}
    assert doc["experiment"]["name"] == "exp"
    assert doc["experiment"]["sources"][0]["filename"] == "train.py"
    assert sorted(doc["experiment"]["dependencies"])[1] == "opentelemetry-exporter-otlp-proto-http==1.27.0"
    assert [a["filename"] for a in doc["artifacts"]] == ["model.bin"]
    assert [r["filename"] for r in doc["resources"]] == [str(tmp_path / "train.py")]


def test_schema_has_sacreds_tables_columns_and_the_metric_index(db_url: str, tmp_path: Path) -> None:
    from sacred.observers import sql_bases

    observer = SqlObserver(db_url)
    start(observer, tmp_path)
    inspector = sa.inspect(observer.engine)
    for name, table in sql_bases.Base.metadata.tables.items():
        ours = {column["name"] for column in inspector.get_columns(name)}
        assert {column.name for column in table.columns} <= ours, name
    indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes("metric")}
    assert indexes["ix_metric_run_name_step"] == ["run_id", "name", "step"]


def test_ids_are_plain_sequential_numbers_and_given_ids_are_kept(db_url: str, tmp_path: Path) -> None:
    assert [start(SqlObserver(db_url), tmp_path) for _ in range(3)] == [1, 2, 3]
    assert start(SqlObserver(db_url), tmp_path, _id="custom") == "custom"
    with pytest.raises(SqlObserverError, match="already exists"):
        start(SqlObserver(db_url), tmp_path, _id="custom")


def test_queued_run_keeps_its_id_when_it_starts(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = observer.queued_event(
        ex_info=ex_info(tmp_path),
        command="train",
        host_info=HOST,
        queue_time=T1,
        config={},
        meta_info={},
        _id=None,
    )
    assert read_run(observer.engine, _id).status == "QUEUED"
    assert start(SqlObserver(db_url), tmp_path, _id=_id) == _id
    assert read_run(observer.engine, _id).status == "RUNNING"


def test_results_metrics_and_traces_json_cannot_hold_are_kept(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path, weights=np.arange(3))
    stamps = [T1, T2]
    observer.log_metrics(
        {
            "loss": {
                "steps": [0, 1],
                "values": [np.float32(0.5), float("nan")],
                "timestamps": stamps,
                "name": "loss",
            }
        },
        {},
    )
    observer.heartbeat_event(info={"arr": np.ones(2)}, captured_out="a", beat_time=T2, result=None)
    observer.log_metrics({"loss": {"steps": [2], "values": [0.25], "timestamps": [T2], "name": "loss"}}, {})
    observer.failed_event(
        fail_time=T2, fail_trace=["Traceback (most recent call last):\n", "ValueError: x\n"]
    )
    record = read_run(observer.engine, _id)
    assert record.metrics == {"loss": {"steps": [0, 1, 2], "values": [0.5, None, 0.25]}}
    assert record.fail_trace == ["Traceback (most recent call last):\n", "ValueError: x\n"]
    assert record.config["weights"]["py/object"] == "numpy.ndarray"
    observer2 = SqlObserver(db_url)
    start(observer2, tmp_path)
    observer2.completed_event(stop_time=T2, result={"acc": np.float64(0.5)})
    with observer2.engine.connect() as conn:
        row = conn.execute(sa.select(sql_schema.run).where(sql_schema.run.c.run_id == "2")).one()
    assert row.result is None and json.loads(row.result_json)["acc"]["value"] == 0.5


def test_a_step_that_is_not_a_whole_number_is_stored_as_logged(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    steps = [0, 0.5, np.int64(2), 3.0, -1.25, 2**62]
    observer.log_metrics(
        {"lr": {"steps": steps, "values": [1.0] * 6, "timestamps": [T1] * 6, "name": "lr"}}, {}
    )
    observer.completed_event(stop_time=T2, result=None)
    stored = read_run(observer.engine, _id).metrics["lr"]["steps"]
    assert stored == [0, 0.5, 2, 3, -1.25, 2**62]
    assert [type(step) for step in stored] == [int, float, int, int, float, int]
    with observer.engine.connect() as conn:  # the floor keeps the index ordering the points
        floors = conn.execute(sa.select(sql_schema.metric.c.step).order_by("metric_id")).scalars()
        assert list(floors) == [0, 0, 2, 3, -2, 2**62]


def test_points_that_cannot_be_stored_are_refused_loudly_and_do_not_block_later_beats(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``log_scalar`` refuses such points before any observer sees them; a batch built by hand
    (or restored from elsewhere) still stores what it can and says what it left out. It does
    not raise: the points it stored would be doubled by a retry."""
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    bad = {
        "loss": {
            "steps": [0, "one", float("nan"), 2**70, 4, 5],
            "values": [0.5, 0.5, 0.5, 0.5, "high", 0.25],
            "timestamps": [T1] * 6,
            "name": "loss",
        },
        "x" * 300: {"steps": [0], "values": [1.0], "timestamps": [T1], "name": "x" * 300},
    }
    observer.log_metrics(bad, {})
    message = caplog.text
    assert "metric 'loss': 4 point(s) not recorded" in message and "'one' is not a number" in message
    assert "longer than 255 characters" in message
    observer.heartbeat_event(info={"ok": 1}, captured_out="beat\n", beat_time=T2, result=None)
    record = read_run(observer.engine, _id)
    assert record.metrics == {"loss": {"steps": [0, 5], "values": [0.5, 0.25]}}
    assert record.info == {"ok": 1} and record.captured_out == "beat\n"


def test_custom_interrupt_status_is_kept_beside_sacreds_enum(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    observer.interrupted_event(interrupt_time=T2, status="CUSTOM_INTERRUPTION")
    with observer.engine.connect() as conn:
        row = conn.execute(sa.select(sql_schema.run)).one()
    assert (row.status, row.status_detail) == ("INTERRUPTED", "CUSTOM_INTERRUPTION")
    assert read_run(observer.engine, _id).status == "CUSTOM_INTERRUPTION"


def test_heartbeat_from_another_thread_is_visible_to_another_connection_mid_run(
    db_url: str, tmp_path: Path
) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    beat = threading.Thread(
        target=lambda: observer.heartbeat_event(
            info={"epoch": 3}, captured_out="epoch 3\n", beat_time=T2, result=0.5
        )
    )
    beat.start()
    beat.join()
    other = sa.create_engine(db_url)
    with other.connect() as conn:
        row = conn.execute(sa.text("SELECT heartbeat, info, captured_out, status FROM run")).one()
    other.dispose()
    assert row.status == "RUNNING" and json.loads(row.info) == {"epoch": 3}
    assert row.captured_out == "epoch 3\n" and row.heartbeat is not None


def test_output_is_appended_and_rewritten_when_a_filter_changes_it(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    observer.heartbeat_event(info={}, captured_out="one\n", beat_time=T2, result=None)
    observer.heartbeat_event(info={}, captured_out="one\ntwo\n", beat_time=T2, result=None)
    assert read_run(observer.engine, _id).captured_out == "one\ntwo\n"
    observer.heartbeat_event(info={}, captured_out="ONE\n", beat_time=T2, result=None)
    assert read_run(observer.engine, _id).captured_out == "ONE\n"


def _stored_output(observer: SqlObserver, _id: Any) -> str:
    return read_run(observer.engine, _id).captured_out


def _beat(observer: SqlObserver, captured_out: str, delta: OutputDelta | None = None) -> None:
    observer.heartbeat_event(
        info={}, captured_out=captured_out, beat_time=T2, result=None, output_delta=delta
    )


def test_a_beat_with_an_output_delta_appends_only_the_delta(db_url: str, tmp_path: Path) -> None:
    """The delta is trusted: what ``captured_out`` begins with is not compared."""
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    _beat(observer, "one\n", OutputDelta(0, "one\n"))
    _beat(observer, "ONE\ntwo\n", OutputDelta(4, "two\n"))
    assert _stored_output(observer, _id) == "one\n" + "two\n"


def test_a_delta_that_does_not_continue_the_stored_output_writes_it_whole(
    db_url: str, tmp_path: Path
) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    _beat(observer, "one\ntwo\n", OutputDelta(0, "one\ntwo\n"))
    # A filter rewrote the end (start < stored), or a beat was missed (start > stored).
    for captured, delta in [
        ("one\n2\n", OutputDelta(4, "2\n")),
        ("one\n2\nlost\n3\n", OutputDelta(11, "3\n")),
    ]:
        _beat(observer, captured, delta)
        assert _stored_output(observer, _id) == captured


def test_a_sacred_style_beat_without_a_delta_stores_the_whole_output(db_url: str, tmp_path: Path) -> None:
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    _beat(observer, "one\n", OutputDelta(0, "one\n"))
    _beat(observer, "other\n")
    assert _stored_output(observer, _id) == "other\n"
    _beat(observer, "other\nmore\n", OutputDelta(6, "more\n"))
    assert _stored_output(observer, _id) == "other\nmore\n"


def _raw_captured_out(observer: SqlObserver, _id: Any) -> str | None:
    with observer.engine.connect() as conn:
        query = sa.select(sql_schema.run.c.captured_out).where(sql_schema.run.c.run_id == str(_id))
        return conn.execute(query).scalar_one()  # type: ignore[no-any-return]


def test_captured_out_is_null_until_the_first_beat_and_appending_to_null_works(
    db_url: str, tmp_path: Path
) -> None:
    """Sacred leaves ``captured_out`` NULL at the start: ``IS NULL`` means "never beat"."""
    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    assert _raw_captured_out(observer, _id) is None
    _beat(observer, "", OutputDelta(0, ""))  # a beat without output: no longer "never beat"
    assert _raw_captured_out(observer, _id) == ""
    _beat(observer, "one\n", OutputDelta(0, "one\n"))
    assert _raw_captured_out(observer, _id) == "one\n"
    # The first beat appends straight onto NULL, with a delta or (Sacred's callers) without.
    for delta in (OutputDelta(0, "first\n"), None):
        other = SqlObserver(db_url)
        other_id = start(other, tmp_path)
        assert _raw_captured_out(other, other_id) is None
        _beat(other, "first\n", delta)
        assert _raw_captured_out(other, other_id) == "first\n"
    queued = SqlObserver(db_url)
    queued_id = queued.queued_event(
        ex_info=ex_info(tmp_path),
        command="train",
        host_info=HOST,
        queue_time=T1,
        config={},
        meta_info={},
        _id=None,
    )
    start(queued, tmp_path, _id=queued_id)
    assert _raw_captured_out(queued, queued_id) is None
    queued.completed_event(stop_time=T2, result=None)  # a run that never beat stays NULL
    assert _raw_captured_out(queued, queued_id) is None


def test_observers_compare_equal_by_engine_url_and_session(tmp_path: Path) -> None:
    """As Sacred's: "is this observer attached already" checks in users' code keep working."""
    import sqlalchemy.orm

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first, second = SqlObserver(url), SqlObserver(url, priority=1)
    assert first == second and hash(first) == hash(second)
    assert not first != second  # noqa: SIM202 (Sacred's tests check __ne__ too)
    assert second in [first] and len({first, second}) == 1
    assert first != SqlObserver(f"sqlite:///{tmp_path / 'other.db'}") and first != "foo"
    with sqlalchemy.orm.Session(first.engine) as session, sqlalchemy.orm.Session(first.engine) as another:
        on_session = SqlObserver.create_from(first.engine, session)
        assert on_session == SqlObserver.create_from(None, session)
        assert hash(on_session) == hash(SqlObserver.create_from(None, session))
        assert on_session != SqlObserver.create_from(first.engine, another)


def test_long_output_is_spread_over_rows_while_live_and_gathered_at_the_end(
    db_url: str, tmp_path: Path
) -> None:
    """A beat costs what is new: appending to one ever longer cell would rewrite all of it."""
    from sacred.observers import sql_bases

    observer = SqlObserver(db_url)
    _id = start(observer, tmp_path)
    captured = ""
    for beat in range(6):
        new = f"beat {beat} é\n" * 5000  # 50 KB a beat, non-ASCII included
        _beat(observer, captured + new, OutputDelta(len(captured), new))
        captured += new
        assert _stored_output(observer, _id) == captured
    with observer.engine.connect() as conn:
        live_cell = conn.execute(sa.select(sql_schema.run.c.captured_out)).scalar()
        rows = conn.execute(sa.select(sa.func.count()).select_from(sql_schema.run_output)).scalar()
    assert len(live_cell.encode()) <= 64 * 1024 and rows >= 5
    observer.completed_event(stop_time=T2, result=None)
    with sa.orm.Session(observer.engine) as session:
        assert session.query(sql_bases.Run).filter_by(run_id=str(_id)).one().captured_out == captured
    with observer.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sql_schema.run_output)).scalar() == 0


def test_the_observer_keeps_no_reference_to_captured_out(tmp_path: Path) -> None:
    """A reference kept past the call would make the run copy its whole output at every beat."""
    observer = SqlObserver(f"sqlite:///{tmp_path / 'runs.db'}")
    start(observer, tmp_path)
    captured = "".join(["out", "put\n"])  # fresh strings, referenced only here
    more = captured + "more\n"
    for text, delta in [(captured, None), (more, OutputDelta(len(captured), "more\n"))]:
        before = sys.getrefcount(text)
        _beat(observer, text, delta)
        assert sys.getrefcount(text) == before


def _start_in_process(url: str, base: str, queue: Any) -> None:
    try:
        queue.put(start(SqlObserver(url), Path(base)))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(repr(exc))


def test_concurrent_first_use_from_processes_creates_tables_once_and_distinct_ids(
    db_url: str, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_start_in_process, args=(db_url, str(tmp_path), queue)) for _ in range(6)
    ]
    for process in processes:
        process.start()
    ids = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    assert sorted(ids, key=str) == [1, 2, 3, 4, 5, 6], ids


def test_wrong_credentials_fail_at_start_without_the_password(tmp_path: Path) -> None:
    if not port_open("127.0.0.1", 5432):
        service_missing("no PostgreSQL on 127.0.0.1:5432")
    secret = "s3cr3t-pw-123"
    observer = SqlObserver(f"postgresql+psycopg://nobody:{secret}@127.0.0.1:5432/test")
    with pytest.raises(SqlObserverError) as caught:
        start(observer, tmp_path)
    message = str(caught.value)
    assert secret not in message and "nobody" in message and "cannot use the database" in message


def test_unreachable_database_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    observer = SqlObserver("mysql+pymysql://root:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(SqlObserverError, match=r"cannot use the database .*127\.0\.0\.1:1") as caught:
        start(observer, tmp_path)
    assert "hunter2" not in str(caught.value)


def test_url_schemes_flag_location_and_reattach(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    observer = observer_from_url(url)
    assert isinstance(observer, SqlObserver)
    _id = start(observer, tmp_path)
    assert observer.run_location() == f"{url}#run=1"
    observer.heartbeat_event(info={}, captured_out="one\n", beat_time=T2, result=None)
    other = SqlObserver(url)
    assert other.reattach(_id) is True
    other.heartbeat_event(info={}, captured_out="one\ntwo\n", beat_time=T2, result=None)
    assert read_run(other.engine, _id).captured_out == "one\ntwo\n"  # replaced, not appended to
    other.interrupted_event(interrupt_time=T2, status="INTERRUPTED")
    assert SqlObserver(url).reattach(_id) is False
    hidden = SqlObserver("postgresql://u:pw@h/db")
    hidden._run_key = "3"
    assert hidden.run_location() == "postgresql://u:***@h/db#run=3"


@pytest.mark.slow
def test_command_line_run_with_the_sql_flag(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent("""
        from prefect_sacred import Experiment
        ex = Experiment("cli_sql")

        @ex.automain
        def main(lr: float = 0.1, _run=None):
            for step in range(5):
                _run.log_scalar("loss", 1.0 / (step + 1))
            print("trained")
            return lr * 2
    """)
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run(
        [PYTHON, str(script), "with", "lr=0.25", "-s", url, "-b", "0.2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert f"{url}#run=1" in done.stdout
    record = read_run(sa.create_engine(url), 1)
    assert record.status == "COMPLETED" and record.result == 0.5 and record.config["lr"] == 0.25
    assert record.metrics["loss"]["steps"] == [0, 1, 2, 3, 4]
    assert "trained" in record.captured_out
