"""SqlObserver opens a database that Sacred 0.8.7 created, and upgrades it in place."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefect_sacred import SqlObserver
from tests.observers.test_sql_observer import HOST, T1, T2, db_url, start  # noqa: F401  (fixture)


def sacred_run(url: str, base: Path) -> Any:
    from sacred.observers import SqlObserver as SacredSqlObserver

    observer = SacredSqlObserver(url)
    (base / "old.py").write_text("print('old')\n")
    _id = observer.started_event(
        ex_info={
            "name": "old",
            "base_dir": str(base)[:60],
            "sources": [],
            "dependencies": ["numpy==2.0.0"],
            "repositories": [],
            "mainfile": "old.py",
        },
        command="main",
        host_info={**HOST, "os": ["Linux", "Linux"]},
        start_time=T1,
        config={"lr": 0.5},
        meta_info={},
        _id=None,
    )
    observer.completed_event(stop_time=T2, result=1.5)
    return _id


def test_a_database_sacred_created_is_upgraded_in_place(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    old_id = sacred_run(db_url, tmp_path)
    # Wider than Sacred's columns (base_dir 64, dependency 32, experiment name 32 characters).
    deep = tmp_path / ("a-directory-name-longer-than-sacreds-sixty-four-character-limit" * 2)
    deep.mkdir()
    observer = SqlObserver(db_url)
    new_id = start(observer, deep)
    observer.completed_event(stop_time=T2, result={"accuracy": 0.9})
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT run_id, status FROM run")).all())
            columns = {column["name"] for column in sa.inspect(conn).get_columns("run")}
            tables = set(sa.inspect(conn).get_table_names())
        assert rows == {str(old_id): "COMPLETED", str(new_id): "COMPLETED"}
        assert {"meta_json", "result_json", "fail_trace_json", "status_detail"} <= columns
        assert {"metric", "run_output"} <= tables
        from sacred.observers.sql_bases import Run

        with Session(engine) as session:  # Sacred's own models read the old run and the new one
            records = {str(run.run_id): run.to_json() for run in session.query(Run).all()}
        assert records[str(old_id)]["result"] == 1.5 and records[str(old_id)]["config"] == {"lr": 0.5}
        assert records[str(new_id)]["experiment"]["base_dir"] == str(deep)
        assert (
            "opentelemetry-exporter-otlp-proto-http==1.27.0"
            in records[str(new_id)]["experiment"]["dependencies"]
        )
        assert isinstance(records[str(new_id)]["stop_time"], dt.datetime)
    finally:
        engine.dispose()
    # A second observer finds the upgraded database as it is.
    again = SqlObserver(db_url)
    start(again, deep)
    again.completed_event(stop_time=T2, result=None)
