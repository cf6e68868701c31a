"""The SqlObserver under the contract suite, on SQLite, PostgreSQL and MariaDB.

Each backend works in a database of its own, created for the session and dropped at its end,
and reads runs back with plain SQL (not through the observer).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from prefect_sacred import SqlObserver
from tests.backends import Backend, BackendUnavailable, RunRecord
from tests.support import port_open

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"


def run_key(run_id: Any) -> str:
    """The stored ``run.run_id`` of a run id, or of a ``run_location()`` string."""
    text = str(run_id)
    return text.rsplit("#run=", 1)[1] if "#run=" in text else text


def read_run(engine: Any, run_id: Any) -> RunRecord:
    """A stored run, read back with SQLAlchemy Core."""
    import sqlalchemy as sa

    from prefect_sacred.observers.sql import schema as t

    key = run_key(run_id)
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.run).where(t.run.c.run_id == key)).one()
        overflow = (
            conn.execute(
                sa.select(t.run_output.c.chunk)
                .where(t.run_output.c.run_id == key)
                .order_by(t.run_output.c.seq)
            )
            .scalars()
            .all()
        )
        metrics: dict[str, dict[str, list[Any]]] = {}
        for name, step, step_exact, value in conn.execute(
            sa.select(t.metric.c.name, t.metric.c.step, t.metric.c.step_exact, t.metric.c.value)
            .where(t.metric.c.run_id == key)
            .order_by(t.metric.c.metric_id)
        ):
            series = metrics.setdefault(name, {"steps": [], "values": []})
            series["steps"].append(step if step_exact is None else step_exact)
            series["values"].append(value)
        artifacts = dict(
            conn.execute(
                sa.select(t.artifact.c.filename, t.artifact.c.content).where(t.artifact.c.run_id == key)
            ).all()
        )
        resources = (
            conn.execute(
                sa.select(t.resource.c.filename)
                .join(t.runs_resources, t.runs_resources.c.resource_id == t.resource.c.resource_id)
                .where(t.runs_resources.c.run_id == key)
            )
            .scalars()
            .all()
        )
    return RunRecord(
        status=row.status_detail or row.status,
        config=json.loads(row.config) if row.config else {},
        info=json.loads(row.info) if row.info else {},
        result=json.loads(row.result_json) if row.result_json else None,
        captured_out=(row.captured_out or "") + "".join(overflow),
        heartbeat=row.heartbeat,
        start_time=row.start_time,
        stop_time=row.stop_time,
        fail_trace=json.loads(row.fail_trace_json) if row.fail_trace_json else None,
        metrics=metrics,
        artifacts={name: bytes(content) for name, content in artifacts.items()},
        resources=[os.path.basename(name) for name in resources],
        meta=json.loads(row.meta_json) if row.meta_json else {},
    )


class _SqlBackend(Backend):
    def start(self, tmp_path_factory: Any) -> None:
        self.db_url = self.create_database(tmp_path_factory)
        self._engine: Any = None

    def create_database(self, tmp_path_factory: Any) -> str:
        raise NotImplementedError

    def observer(self) -> SqlObserver:
        observer = SqlObserver(self.db_url)
        self._engine = observer.engine
        return observer

    def url(self) -> str:
        return self.db_url

    def cli_args(self) -> list[str]:
        return ["-s", self.db_url]

    def record(self, run_id: Any) -> RunRecord:
        if self._engine is None:
            self.observer()
        return read_run(self._engine, run_id)

    def run_ids(self) -> list[str]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.db_url)  # the observer's may be closed
        try:
            if not sa.inspect(engine).has_table("run"):
                return []
            with engine.connect() as conn:
                return [str(row.run_id) for row in conn.execute(sa.text("select run_id from run"))]
        finally:
            engine.dispose()


class SqliteBackend(_SqlBackend):
    name = "sql_sqlite"

    def create_database(self, tmp_path_factory: Any) -> str:
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'runs.db'}"


class _ServerBackend(_SqlBackend):
    admin_url = ""
    port = 0

    def create_database(self, tmp_path_factory: Any) -> str:
        import sqlalchemy as sa

        if not port_open("127.0.0.1", self.port):
            raise BackendUnavailable(f"no database server on 127.0.0.1:{self.port}")
        self.database = f"ps_contract_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {self.database}"))
        admin.dispose()
        return str(sa.make_url(self.admin_url).set(database=self.database).render_as_string(False))

    def stop(self) -> None:

        if self._engine is not None:
            self._engine.dispose()
        drop_database(self.admin_url, self.database)


def drop_database(admin_url: str, database: str) -> None:
    """Drop ``database``, closing other sessions on PostgreSQL."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database}{force}"))
    admin.dispose()


class PostgresBackend(_ServerBackend):
    name = "sql_postgres"
    admin_url = PG_ADMIN
    port = 5432


class MariaDbBackend(_ServerBackend):
    name = "sql_mariadb"
    admin_url = MARIADB_ADMIN
    port = 3306
