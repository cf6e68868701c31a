"""SqlObserver: Sacred's SQL schema on any SQLAlchemy database (SQLite, PostgreSQL, MySQL/MariaDB).

Sacred's own models (``sacred.observers.sql_bases``) read what this observer writes; the tables
and the additions are described in :mod:`prefect_sacred.observers.sql_schema`. Differences from
Sacred's observer:

* every event is its own committed transaction on a pooled connection, so heartbeats sent from
  the heartbeat thread are visible to other connections while the run is running;
* a beat is one transaction: the new metric points (one bulk insert into ``metric``), the
  heartbeat, ``info``, the result and only the *new* captured output (appended in the database);
* run ids are the sequential ``run.id`` numbers (1, 2, 3 ...), unique across processes because
  the database assigns them;
* the first use creates the tables, and a second process doing the same at the same moment waits
  (a database lock) or retries instead of failing;
* an unreachable database or wrong credentials fail the run at start, with the URL's password
  hidden.

Requires ``pip install 'prefect-sacred[sql]'``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

from prefect_sacred.flows.info import md5_of_file
from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.registry import (
    ObserverConfigError,
    redact,
    register_observer_option,
    register_url_scheme,
)
from prefect_sacred.serialization import flatten

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["SqlObserver", "SqlObserverError"]

INSTALL_HINT = "pip install 'prefect-sacred[sql]'"
# MySQL/MariaDB refuse statements (and values built by CONCAT) above max_allowed_packet: output
# is sent in pieces this large, and what no longer fits in run.captured_out goes to run_output.
_PIECE = 1 << 20
_MYSQL = ("mysql", "mariadb")


class SqlObserverError(RuntimeError):
    """The database cannot be reached or refused the run (the message never holds a password)."""


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise ImportError(f"SqlObserver needs SQLAlchemy: {INSTALL_HINT}") from None
    return sqlalchemy


class SqlObserver(RunObserver):
    """Records runs in Sacred's SQL tables through SQLAlchemy.

    Args:
        url: Any SQLAlchemy URL, e.g. ``sqlite:///runs.db``,
            ``postgresql://user:password@host/db``, ``mysql+pymysql://user@host/db``.
        echo: Log every SQL statement (SQLAlchemy's ``echo``).
        priority: Observers are called in descending priority; the first id returned wins.

    Raises:
        ImportError: SQLAlchemy (or the URL's database driver) is not installed.
        ObserverConfigError: ``url`` is not a valid SQLAlchemy URL.
    """

    def __init__(self, url: str, echo: bool = False, priority: int = 40) -> None:
        sqlalchemy = _sqlalchemy()
        self.url = url
        self.priority = priority
        try:
            self.engine = _create_engine(sqlalchemy, url, echo)
        except sqlalchemy.exc.ArgumentError as exc:
            raise ObserverConfigError(f"invalid database URL {redact(url)!r}: {exc}") from None
        except ImportError as exc:
            raise ImportError(f"no driver for {redact(url)!r} ({exc}): {INSTALL_HINT}") from None
        self._reset(None)

    @classmethod
    def create_from(
        cls, engine: sa.Engine | None, session: Any = None, priority: int = 40
    ) -> SqlObserver:
        """An observer on an existing engine (Sacred's alternative constructor).

        Args:
            engine: The SQLAlchemy engine to write through.
            session: Accepted for Sacred compatibility; when ``engine`` is None its bind is
                used. Events use their own short transactions on ``engine``, so that heartbeats
                from the heartbeat thread commit independently of the caller's session.
            priority: Observer priority.
        """
        _sqlalchemy()
        if engine is None:
            if session is None:
                raise ValueError("create_from needs an engine or a session bound to one")
            engine = session.get_bind()
        observer = cls.__new__(cls)
        observer.url = engine.url.render_as_string(hide_password=False)
        observer.priority = priority
        observer.engine = engine
        observer._reset(None)
        return observer

    # --- events -------------------------------------------------------------------------------

    def queued_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        values = self._run_values(ex_info, command, host_info, config, meta_info)
        values.update(status="QUEUED", queue_time=queue_time)
        return self._create_run(values, _id, ex_info, host_info)

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        values = self._run_values(ex_info, command, host_info, config, meta_info)
        values.update(status="RUNNING", start_time=start_time, captured_out="", info=json.dumps({}))
        return self._create_run(values, _id, ex_info, host_info)

    def log_metrics(
        self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]
    ) -> None:
        # Buffered and written with the heartbeat that follows, in one transaction; a beat that
        # fails keeps its points for the next one.
        for name, series in metrics_by_name.items():
            for step, value, stamp in zip(
                series["steps"], series["values"], series["timestamps"], strict=False
            ):
                self._pending.append((self._run_key, name, int(step), _finite(value), stamp))

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        self._update(
            {"heartbeat": beat_time, "info": json.dumps(flatten(info)), **_result_values(result)},
            captured_out,
        )

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._update({"stop_time": stop_time, "status": "COMPLETED", **_result_values(result)})

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        from prefect_sacred.observers.sql_schema import STATUSES

        known = status in STATUSES
        self._update(
            {
                "stop_time": interrupt_time,
                "status": status if known else "INTERRUPTED",
                "status_detail": None if known else status[:64],
            }
        )

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._update(
            {
                "stop_time": fail_time,
                "status": "FAILED",
                "fail_trace": "\n".join(fail_trace),  # Sacred's format
                "fail_trace_json": json.dumps(list(fail_trace)),
            }
        )

    def resource_event(self, filename: str) -> None:
        from prefect_sacred.observers import sql_schema as t

        sa = _sqlalchemy()
        md5 = md5_of_file(filename)
        with self._begin() as conn:
            resource_id = conn.execute(
                sa.select(t.resource.c.resource_id)
                .where(t.resource.c.filename == filename, t.resource.c.md5sum == md5)
                .limit(1)
            ).scalar()
            if resource_id is None:
                with open(filename, "rb") as handle:
                    content = handle.read()
                resource_id = conn.execute(
                    t.resource.insert().values(filename=filename, md5sum=md5, content=content)
                ).inserted_primary_key[0]
            linked = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.runs_resources)
                .where(
                    t.runs_resources.c.run_id == self._run_key,
                    t.runs_resources.c.resource_id == resource_id,
                )
            ).scalar()
            if not linked:
                conn.execute(
                    t.runs_resources.insert().values(run_id=self._run_key, resource_id=resource_id)
                )

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        from prefect_sacred.observers import sql_schema as t

        with open(filename, "rb") as handle:
            content = handle.read()
        with self._begin() as conn:
            conn.execute(
                t.artifact.insert().values(filename=name, content=content, run_id=self._run_key)
            )

    def join(self) -> None:
        if self._pending and self._run_key is not None:
            self._update({})

    def reattach(self, _id: Any) -> bool:
        from prefect_sacred.observers import sql_schema as t

        sa = _sqlalchemy()
        try:
            with self._begin() as conn:
                row = conn.execute(
                    sa.select(t.run.c.status, t.run.c.captured_out).where(
                        t.run.c.run_id == str(_id)
                    )
                ).first()
        except SqlObserverError:
            return False
        if row is None or row.status in t.FINISHED_STATUSES:
            return False
        self._reset(str(_id))
        self._cout = row.captured_out or ""
        return True

    def run_location(self) -> str | None:
        if self._run_key is None:
            return None
        return f"{self.engine.url.render_as_string(hide_password=True)}#run={self._run_key}"

    # --- writing ------------------------------------------------------------------------------

    def _reset(self, run_key: str | None) -> None:
        """Per-run state: fresh objects, since a busy observer is shallow-copied for a new run."""
        self._run_key = run_key
        self._pending: list[tuple[str | None, str, int, float | None, dt.datetime]] = []
        self._cout = ""
        self._cout_bytes = 0
        self._overflow_seq = 0

    def _begin(self) -> Any:
        """A transaction on a pooled connection; connection failures become a clear error."""
        sa = _sqlalchemy()
        try:
            connection = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise SqlObserverError(self._describe(exc)) from None
        return _Transaction(connection)

    def _describe(self, exc: BaseException) -> str:
        where = self.engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        password = self.engine.url.password
        if password:
            reason = reason.replace(str(password), "***")
        return redact(f"cannot use the database {where}: {reason}")

    def _ensure_tables(self) -> None:
        """Create missing tables; concurrent first uses serialize on a database lock or retry."""
        from prefect_sacred.observers import sql_schema as t

        sa = _sqlalchemy()
        for attempt in range(5):
            with self._begin() as conn:
                dialect = conn.dialect.name
                if set(sa.inspect(conn).get_table_names()) >= set(t.metadata.tables):
                    return
            try:
                with self._begin() as conn:
                    if dialect == "postgresql":  # released at commit
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7251009)"))
                        t.metadata.create_all(conn, checkfirst=True)
                    elif dialect in _MYSQL:  # DDL commits implicitly: a session lock instead
                        conn.execute(sa.text("SELECT GET_LOCK('prefect_sacred_schema', 60)"))
                        try:
                            t.metadata.create_all(conn, checkfirst=True)
                        finally:
                            conn.execute(sa.text("SELECT RELEASE_LOCK('prefect_sacred_schema')"))
                    else:
                        t.metadata.create_all(conn, checkfirst=True)
                return
            except sa.exc.DBAPIError:
                # Another process created a table or type between our check and our CREATE.
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _run_values(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        config: dict[str, Any],
        meta_info: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "command": command,
            "config": json.dumps(flatten(config)),
            "priority": float(meta_info.get("priority", 0.0) or 0.0),
            "comment": meta_info.get("comment", ""),
            "meta_json": json.dumps(flatten(meta_info)),
        }

    def _create_run(
        self, values: dict[str, Any], _id: Any, ex_info: dict[str, Any], host_info: dict[str, Any]
    ) -> Any:
        sa = _sqlalchemy()
        try:
            self._ensure_tables()
            for _attempt in range(10):
                try:
                    with self._begin() as conn:
                        values["host_id"] = _host_id(conn, host_info)
                        values["experiment_id"] = _experiment_id(conn, ex_info)
                        run_key = self._claim_id(conn, values, _id)
                    break
                except sa.exc.IntegrityError:
                    if _id is not None:
                        raise
                    # Another process took the id we derived; the next attempt derives a new one.
            else:
                raise SqlObserverError("could not claim a run id after 10 attempts")
        except sa.exc.DBAPIError as exc:
            raise SqlObserverError(self._describe(exc)) from None
        self._reset(run_key)
        return _id if _id is not None else int(run_key)

    def _claim_id(self, conn: Any, values: dict[str, Any], _id: Any) -> str:
        from prefect_sacred.observers import sql_schema as t

        sa = _sqlalchemy()
        if _id is not None:
            key = str(_id)
            existing = conn.execute(sa.select(t.run.c.status).where(t.run.c.run_id == key)).first()
            if existing is None:
                conn.execute(t.run.insert().values(run_id=key, **values))
            elif existing.status == "QUEUED" and values["status"] == "RUNNING":
                conn.execute(t.run.update().where(t.run.c.run_id == key).values(**values))
            else:
                raise SqlObserverError(f"a run with id {key!r} already exists ({existing.status})")
            return key
        pk = conn.execute(t.run.insert().values(**values)).inserted_primary_key[0]
        candidate = int(pk)
        # Normally run_id == id; a user-given id such as "7" may already hold that name.
        while conn.execute(sa.select(t.run.c.id).where(t.run.c.run_id == str(candidate))).first():
            candidate += 1
        conn.execute(t.run.update().where(t.run.c.id == pk).values(run_id=str(candidate)))
        return str(candidate)

    def _update(self, values: dict[str, Any], captured_out: str | None = None) -> None:
        from prefect_sacred.observers import sql_schema as t

        if self._run_key is None:
            raise SqlObserverError("SqlObserver received an event before the run started")
        sa = _sqlalchemy()
        try:
            with self._begin() as conn:
                if self._pending:
                    _insert_metrics(conn, self._pending)
                if captured_out is not None:
                    self._write_output(conn, captured_out)
                if values:
                    conn.execute(
                        t.run.update().where(t.run.c.run_id == self._run_key).values(**values)
                    )
        except sa.exc.DBAPIError as exc:
            raise SqlObserverError(self._describe(exc)) from None
        self._pending = []
        if captured_out is not None:
            self._cout = captured_out

    def _write_output(self, conn: Any, captured_out: str) -> None:
        """Send only what is new; rewrite everything when a filter changed earlier output."""
        from prefect_sacred.observers import sql_schema as t

        run = t.run
        if captured_out.startswith(self._cout):
            new = captured_out[len(self._cout) :]
        else:
            conn.execute(run.update().where(run.c.run_id == self._run_key).values(captured_out=""))
            conn.execute(t.run_output.delete().where(t.run_output.c.run_id == self._run_key))
            self._cout_bytes, self._overflow_seq, new = 0, 0, captured_out
        limit = self._cell_limit(conn)
        for start in range(0, len(new), _PIECE):
            piece = new[start : start + _PIECE]
            size = len(piece.encode("utf-8", "replace"))
            if self._overflow_seq == 0 and self._cout_bytes + size <= limit:
                conn.execute(
                    run.update()
                    .where(run.c.run_id == self._run_key)
                    .values(captured_out=_coalesce(run.c.captured_out).concat(piece))
                )
                self._cout_bytes += size
            else:
                self._overflow_seq += 1
                conn.execute(
                    t.run_output.insert().values(
                        run_id=self._run_key, seq=self._overflow_seq, chunk=piece
                    )
                )

    def _cell_limit(self, conn: Any) -> float:
        if conn.dialect.name not in _MYSQL:
            return math.inf
        if not hasattr(self, "_packet"):
            sa = _sqlalchemy()
            self._packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar())
        return max(self._packet - 2 * _PIECE * 4, _PIECE)


class _Transaction:
    """``with``: a connection in a transaction, committed on success, always closed."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __enter__(self) -> Any:
        self._connection.begin()
        return self._connection

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._connection.commit()
            else:
                self._connection.rollback()
        finally:
            self._connection.close()


_METRIC_COLUMNS = ("run_id", "name", "step", "value", "timestamp")
# SQLAlchemy's own text format for DateTime on SQLite, so its readers parse what we write.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _insert_metrics(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """One bulk insert. On SQLite straight through the driver's executemany: SQLAlchemy's
    per-row parameter processing would cost more than SQLite's own inserts."""
    from prefect_sacred.observers import sql_schema as t

    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "INSERT INTO metric (run_id, name, step, value, timestamp) VALUES (?, ?, ?, ?, ?)",
            [(*row[:4], row[4].strftime(_SQLITE_DATETIME)) for row in rows],
        )
    else:
        conn.execute(
            t.metric.insert(), [dict(zip(_METRIC_COLUMNS, row, strict=True)) for row in rows]
        )


def _coalesce(column: Any) -> Any:
    sa = _sqlalchemy()
    return sa.func.coalesce(column, sa.literal("", sa.Text()), type_=sa.Text())


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _result_values(result: Any) -> dict[str, Any]:
    numeric = None
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        numeric = _finite(result)
    else:
        try:  # numpy scalars and other number types
            if hasattr(result, "__float__") and not hasattr(result, "__len__"):
                numeric = _finite(result)
        except (TypeError, ValueError, OverflowError):
            numeric = None
    return {"result": numeric, "result_json": json.dumps(flatten(result))}


def _create_engine(sqlalchemy: Any, url: str, echo: bool) -> Any:
    parsed = sqlalchemy.engine.make_url(url)
    options: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
    if parsed.get_backend_name() != "sqlite":
        return sqlalchemy.create_engine(parsed, **options)
    if parsed.database in (None, "", ":memory:"):
        # One shared connection: per-thread connections would each see their own empty database.
        from sqlalchemy.pool import StaticPool

        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        options["connect_args"] = {"timeout": 60}
        directory = os.path.dirname(os.path.abspath(parsed.database))
        os.makedirs(directory, exist_ok=True)
    engine = sqlalchemy.create_engine(parsed, **options)

    # Writers take the database lock when their transaction begins (BEGIN IMMEDIATE): with
    # several processes, a deferred transaction upgrading to a write lock fails at once
    # ("database is locked") instead of waiting for the busy timeout.
    @sqlalchemy.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _host_id(conn: Any, host_info: dict[str, Any]) -> int:
    from prefect_sacred.observers import sql_schema as t

    os_name, os_info = [*list(host_info.get("os") or []), "", ""][:2]
    values = {
        "hostname": str(host_info.get("hostname", ""))[:255],
        "cpu": str(host_info.get("cpu", ""))[:255],
        "os": str(os_name)[:64],
        "os_info": str(os_info)[:255],
        "python_version": str(host_info.get("python_version", ""))[:64],
    }
    return _get_or_insert(conn, t.host, "host_id", values)


def _experiment_id(conn: Any, ex_info: dict[str, Any]) -> int:
    from prefect_sacred.observers import sql_schema as t

    sa = _sqlalchemy()
    name = str(ex_info.get("name", ""))[:255]
    md5 = hashlib.md5(json.dumps(ex_info, default=str).encode()).hexdigest()
    found = conn.execute(
        sa.select(t.experiment.c.experiment_id)
        .where(t.experiment.c.name == name, t.experiment.c.md5sum == md5)
        .limit(1)
    ).scalar()
    if found is not None:
        return int(found)
    base_dir = str(ex_info.get("base_dir", ""))
    experiment_id = int(
        conn.execute(
            t.experiment.insert().values(name=name, md5sum=md5, base_dir=base_dir[:1024])
        ).inserted_primary_key[0]
    )
    for relpath, md5sum in ex_info.get("sources", []):
        source_id = _source_id(conn, base_dir, relpath, md5sum)
        conn.execute(
            t.experiments_sources.insert().values(experiment_id=experiment_id, source_id=source_id)
        )
    for requirement in ex_info.get("dependencies", []):
        dep_name, _, version = str(requirement).partition("==")
        dependency_id = _get_or_insert(
            conn, t.dependency, "dependency_id", {"name": dep_name[:255], "version": version[:128]}
        )
        conn.execute(
            t.experiments_dependencies.insert().values(
                experiment_id=experiment_id, dependency_id=dependency_id
            )
        )
    for repo in ex_info.get("repositories", []):
        repository_id = _get_or_insert(
            conn,
            t.repository,
            "repository_id",
            {
                "url": str(repo.get("url"))[:2048],
                "commit": str(repo.get("commit"))[:40],
                "dirty": bool(repo.get("dirty")),
            },
        )
        conn.execute(
            t.experiments_repositories.insert().values(
                experiment_id=experiment_id, repository_id=repository_id
            )
        )
    return experiment_id


def _source_id(conn: Any, base_dir: str, relpath: str, md5sum: str) -> int:
    from prefect_sacred.observers import sql_schema as t

    sa = _sqlalchemy()
    found = conn.execute(
        sa.select(t.source.c.source_id)
        .where(t.source.c.filename == relpath, t.source.c.md5sum == md5sum)
        .limit(1)
    ).scalar()
    if found is not None:
        return int(found)
    try:
        with open(os.path.join(base_dir, relpath), encoding="utf-8", errors="replace") as handle:
            content: str | None = handle.read()
    except OSError:  # the source moved since the run started: keep its name and digest
        content = None
    return int(
        conn.execute(
            t.source.insert().values(filename=relpath, md5sum=md5sum, content=content)
        ).inserted_primary_key[0]
    )


def _get_or_insert(conn: Any, table: Any, key: str, values: dict[str, Any]) -> int:
    sa = _sqlalchemy()
    found = conn.execute(
        sa.select(table.c[key])
        .where(*(table.c[name] == value for name, value in values.items()))
        .limit(1)
    ).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])


@register_observer_option("-s", "--sql", "DB_URL", "Add an SQL observer (any SQLAlchemy URL).")
def _sql_option(value: str) -> SqlObserver:
    if not value.strip():
        raise ObserverConfigError("DB_URL must not be empty")
    if value.startswith("postgres://"):  # Heroku-style alias SQLAlchemy no longer accepts
        value = "postgresql://" + value[len("postgres://") :]
    try:
        return SqlObserver(value)
    except ImportError as exc:
        raise ObserverConfigError(str(exc)) from None


@register_url_scheme(
    "sqlite",
    "postgresql",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgres",
    "mysql",
    "mysql+pymysql",
    "mysql+mysqldb",
    "mariadb",
    "mariadb+pymysql",
    "mariadb+mariadbconnector",
    "mssql",
    "oracle",
)
def _sql_url(url: str) -> RunObserver:
    """``sqlite:///runs.db``, ``postgresql://...``, ``mysql+pymysql://...``: any SQLAlchemy URL."""
    return _sql_option(url)
