"""SqlObserver: Sacred's SQL schema on any SQLAlchemy database (SQLite, PostgreSQL, MySQL/MariaDB).

Sacred's own models (``sacred.observers.sql_bases``) read what this observer writes; the tables
and the additions are described in :mod:`prefect_sacred.observers.sql.schema`. Differences from
Sacred's observer:

* every event is its own committed transaction on a pooled connection, so heartbeats sent from
  the heartbeat thread are visible to other connections while the run is running;
* ``log_metrics`` is one transaction (one bulk insert into ``metric``) and a heartbeat another
  (the heartbeat, ``info``, the result and only the *new* captured output): an event that
  returned is stored, one that raised stored nothing, so a retry doubles no point;
* captured output costs what is new, however long it is: a beat appends what the run's
  :class:`~prefect_sacred.observers.base.OutputDelta` adds to what is stored, and writes the
  whole output only when the delta does not continue it (or without a delta, as Sacred's
  callers send it). A live run keeps the first 64 KB in ``run.captured_out`` and the rest in
  ``run_output`` rows; the final event moves it all into ``run.captured_out`` (see
  :mod:`~prefect_sacred.observers.sql.output`);
* a metric step that is not a whole number is stored as logged (``metric.step_exact``), and a
  point that cannot be stored at all (a name longer than the column) is left out with an error
  naming the metric, instead of failing the beats that follow;
* run ids are the sequential ``run.id`` numbers (1, 2, 3 ...), unique across processes because
  the database assigns them;
* the first use creates the tables, and a second process doing the same at the same moment waits
  (a database lock) or retries instead of failing;
* an unreachable database or wrong credentials fail the run at start, with the URL's password
  hidden.

The pieces live beside this module: :mod:`~prefect_sacred.observers.sql.engine` (engines,
transactions, errors), :mod:`~prefect_sacred.observers.sql.shared_rows` (host, experiment,
resources), :mod:`~prefect_sacred.observers.sql.metrics` (metric points),
:mod:`~prefect_sacred.observers.sql.output` (captured output) and
:mod:`~prefect_sacred.observers.sql.schema` (tables and their creation).

Requires ``pip install 'prefect-sacred[sql]'``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from prefect_sacred.observers.base import OutputDelta, RunObserver
from prefect_sacred.observers.sql.engine import (
    SqlObserverError,
    begin,
    described_errors,
    engine_for_url,
    sqlalchemy_module,
)
from prefect_sacred.observers.sql.metrics import finite, metric_rows
from prefect_sacred.observers.sql.output import PIECE, StoredOutput
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import md5_of_file, without_leading_points

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["SqlObserver", "SqlObserverError"]

logger = logging.getLogger("prefect_sacred")


class SqlObserver(RunObserver):
    """Records runs in Sacred's SQL tables through SQLAlchemy.

    Args:
        url: Any SQLAlchemy URL, e.g. ``sqlite:///runs.db``,
            ``postgresql://user:password@host/db``, ``mysql+pymysql://user@host/db``.
        echo: Log every SQL statement (SQLAlchemy's ``echo``).
        priority: Observers are called in descending priority; the first id returned wins.
        connect_timeout: Seconds to connect and to check a pooled connection (default: the
            URL's ``?connect_timeout=``, else 5): a database that does not answer fails the
            start within it.
        read_timeout: Seconds any statement or commit may wait for the reply (default: the
            URL's ``?read_timeout=``, else 30): an event then fails instead of hanging.

    Raises:
        ImportError: SQLAlchemy (or the URL's database driver) is not installed.
        ObserverConfigError: ``url`` is not a valid SQLAlchemy URL.
    """

    # Per run (see _reset). _output changes only once the transaction writing it committed.
    _run_key: str | None
    _output: StoredOutput
    _point_counts: dict[str, int]
    _points_in_doubt: bool

    def __init__(
        self,
        url: str,
        echo: bool = False,
        priority: int = 40,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.priority = priority
        self.engine = engine_for_url(url, echo, connect_timeout, read_timeout)
        # How to connect again: a pickle (serve, the run's journal) holds this, not the engine.
        self._engine_options = {
            "echo": echo,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        #: The session given to :meth:`create_from` (Sacred's attribute; events do not use it).
        self.session: Any = None
        self._reset(None)

    @classmethod
    def create_from(cls, engine: sa.Engine | None, session: Any = None, priority: int = 40) -> SqlObserver:
        """An observer on an existing engine (Sacred's alternative constructor).

        Args:
            engine: The SQLAlchemy engine to write through.
            session: Accepted for Sacred compatibility; when ``engine`` is None its bind is
                used. Kept as ``session``: observers compare equal, as Sacred's, when their
                engine URLs and sessions are. Events use their own short transactions on
                ``engine``, so that heartbeats from the heartbeat thread commit independently
                of the caller's session.
            priority: Observer priority.
        """
        sqlalchemy_module()
        if engine is None:
            if session is None:
                raise ValueError("create_from needs an engine or a session bound to one")
            engine = session.get_bind()
        observer = cls.__new__(cls)
        observer.url = engine.url.render_as_string(hide_password=False)
        observer.priority = priority
        observer.engine = engine
        observer.session = session
        observer._reset(None)
        return observer

    def __getstate__(self) -> dict[str, Any]:
        # An engine does not pickle: the state is how to build one (an observer made with
        # create_from on someone's engine cannot be rebuilt).
        options = getattr(self, "_engine_options", None)
        if options is None:
            raise TypeError("a SqlObserver built with create_from cannot be pickled; use SqlObserver(url)")
        return {"url": self.url, "priority": self.priority, **options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        SqlObserver.__init__(self, **state)

    def __copy__(self) -> SqlObserver:
        # A run that finds this instance busy gets a copy sharing the engine (not a new one).
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __eq__(self, other: object) -> bool:
        """Sacred's equality: the same database (engine URL) and the same session."""
        if not isinstance(other, SqlObserver):
            return False
        return bool(self.engine.url == other.engine.url and self.session == other.session)

    def __hash__(self) -> int:
        return hash(self.engine.url)

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
        values = _run_values(command, config, meta_info)
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
        values = _run_values(command, config, meta_info)
        # captured_out stays NULL until the first beat, as Sacred leaves it ("never beat").
        values.update(status="RUNNING", start_time=start_time, info=json.dumps({}))
        return self._create_run(values, _id, ex_info, host_info)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        # Written now, in a transaction of its own: returning means stored. After a raise the
        # delivery worker sends the batch again, and a COMMIT whose answer was lost may have
        # stored it: the retry first counts what the table holds.
        run_key = self._started_key()
        if self._points_in_doubt:
            # The last batch raised, yet its COMMIT may have been applied with the answer lost;
            # this call is that batch again: leave out what the table already holds.
            stored = self.stored_point_counts()
            known = self._point_counts
            metrics_by_name = without_leading_points(
                metrics_by_name, {name: stored.get(name, 0) - known.get(name, 0) for name in metrics_by_name}
            )
            self._point_counts, self._points_in_doubt = stored, False
        rows, refused = metric_rows(run_key, metrics_by_name)
        if rows:
            from prefect_sacred.observers.sql.metrics import insert_metrics

            try:
                with described_errors(self.engine), begin(self.engine) as conn:
                    insert_metrics(conn, rows)
            except Exception:
                self._points_in_doubt = True
                raise
            for row in rows:
                self._point_counts[row[1]] = self._point_counts.get(row[1], 0) + 1
        for message in refused:  # points no SQL column can hold; the others are stored
            logger.error("SqlObserver could not store %s", message)

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        self._update(
            {"heartbeat": beat_time, "info": json.dumps(flatten(info)), **_result_values(result)},
            captured_out,
            output_delta,
        )

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._update({"stop_time": stop_time, "status": "COMPLETED", **_result_values(result)}, final=True)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        from prefect_sacred.observers.sql.schema import STATUSES

        known = status in STATUSES
        self._update(
            {
                "stop_time": interrupt_time,
                "status": status if known else "INTERRUPTED",
                "status_detail": None if known else status[:64],
            },
            final=True,
        )

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._update(
            {
                "stop_time": fail_time,
                "status": "FAILED",
                "fail_trace": "\n".join(fail_trace),  # Sacred's format
                "fail_trace_json": json.dumps(list(fail_trace)),
            },
            final=True,
        )

    def resource_event(self, filename: str) -> None:
        from prefect_sacred.observers.sql.shared_rows import link_resource

        run_key = self._started_key()
        md5 = md5_of_file(filename)
        with begin(self.engine) as conn:
            link_resource(conn, run_key, filename, md5)

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        from prefect_sacred.observers.sql import schema as t

        run_key = self._started_key()
        with open(filename, "rb") as handle:
            content = handle.read()
        with begin(self.engine) as conn:
            conn.execute(t.artifact.insert().values(filename=name, content=content, run_id=run_key))

    def reattach(self, _id: Any) -> bool:
        if _id is None:  # a run no storage observer gave an id is not in this one
            return False
        from prefect_sacred.observers.sql import schema as t

        sa = sqlalchemy_module()
        try:
            with begin(self.engine) as conn:
                status = conn.execute(sa.select(t.run.c.status).where(t.run.c.run_id == str(_id))).scalar()
        except SqlObserverError:
            return False
        if status is None or status in t.FINISHED_STATUSES:
            return False
        self._reset(str(_id))
        self._point_counts = self.stored_point_counts()
        # What is stored is not read (it may be large and only the final event follows): should
        # output come after all, it replaces the stored output instead of being appended to it.
        self._output = StoredOutput(chars=-1)
        return True

    def stored_point_counts(self) -> dict[str, int]:
        """How many points of each metric the ``metric`` table holds for the current run."""
        from prefect_sacred.observers.sql import schema as t

        sa = sqlalchemy_module()
        column = t.metric.c
        query = sa.select(column.name, sa.func.count()).where(column.run_id == self._started_key())
        with described_errors(self.engine), begin(self.engine) as conn:
            return {name: int(count) for name, count in conn.execute(query.group_by(column.name))}

    def run_location(self) -> str | None:
        if self._run_key is None:
            return None
        return f"{self.engine.url.render_as_string(hide_password=True)}#run={self._run_key}"

    # --- writing ------------------------------------------------------------------------------

    def _reset(self, run_key: str | None) -> None:
        """Per-run state: fresh objects, since a busy observer is shallow-copied for a new run."""
        self._run_key = run_key
        self._output = StoredOutput()
        # Points of each metric stored for the run by this instance (or found at ``reattach``).
        self._point_counts = {}
        self._points_in_doubt = False

    def _started_key(self) -> str:
        if self._run_key is None:
            raise SqlObserverError("SqlObserver received an event before the run started")
        return self._run_key

    def _create_run(
        self, values: dict[str, Any], _id: Any, ex_info: dict[str, Any], host_info: dict[str, Any]
    ) -> Any:
        from prefect_sacred.observers.sql.shared_rows import experiment_id, host_id
        from prefect_sacred.observers.sql.upgrade import create_tables

        sa = sqlalchemy_module()
        with described_errors(self.engine):
            create_tables(lambda: begin(self.engine), self.engine.dialect.name)
            for _attempt in range(10):
                try:
                    with begin(self.engine) as conn:
                        values["host_id"] = host_id(conn, host_info)
                        values["experiment_id"] = experiment_id(conn, ex_info)
                        run_key = self._claim_id(conn, values, _id)
                    break
                except sa.exc.IntegrityError:
                    if _id is not None:
                        raise
                    # Another process took the id we derived; the next attempt derives a new one.
            else:
                raise SqlObserverError("could not claim a run id after 10 attempts")
        self._reset(run_key)
        return _id if _id is not None else int(run_key)

    def _claim_id(self, conn: Any, values: dict[str, Any], _id: Any) -> str:
        from prefect_sacred.observers.sql import schema as t

        sa = sqlalchemy_module()
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

    def _update(
        self,
        values: dict[str, Any],
        captured_out: str | None = None,
        output_delta: OutputDelta | None = None,
        final: bool = False,
    ) -> None:
        from prefect_sacred.observers.sql import schema as t
        from prefect_sacred.observers.sql.output import append_output, gather_output

        run_key = self._started_key()
        stored = self._output
        with described_errors(self.engine), begin(self.engine) as conn:
            if captured_out is not None:
                limit = self._cell_limit(conn)
                stored = append_output(conn, run_key, stored, captured_out, output_delta, limit)
            if final:
                gather_output(conn, run_key, stored, self._cell_limit(conn))
            if values:
                conn.execute(t.run.update().where(t.run.c.run_id == run_key).values(**values))
        self._output = stored

    def _cell_limit(self, conn: Any) -> float:
        from prefect_sacred.observers.sql.schema import MYSQL

        if conn.dialect.name not in MYSQL:
            return math.inf
        if not hasattr(self, "_packet"):
            sa = sqlalchemy_module()
            self._packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar())
        # A piece is at most 4 bytes a character, and the statement carries it beside the cell.
        return max(self._packet - 2 * PIECE * 4, PIECE)


def _run_values(command: str, config: dict[str, Any], meta_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": command,
        "config": json.dumps(flatten(config)),
        "priority": float(meta_info.get("priority", 0.0) or 0.0),
        "comment": meta_info.get("comment", ""),
        "meta_json": json.dumps(flatten(meta_info)),
    }


def _result_values(result: Any) -> dict[str, Any]:
    numeric = None
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        numeric = finite(result)
    else:
        try:  # numpy scalars and other number types
            if hasattr(result, "__float__") and not hasattr(result, "__len__"):
                numeric = finite(result)
        except (TypeError, ValueError, OverflowError):
            numeric = None
    return {"result": numeric, "result_json": json.dumps(flatten(result))}
