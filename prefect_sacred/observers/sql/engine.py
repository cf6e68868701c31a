"""The SqlObserver's way to its database: one engine per URL, short transactions, timeouts on
every network call, and errors that say which database failed without ever showing its password.

Timeouts: connecting (TCP, TLS, authentication) gets ``connect_timeout`` seconds (default 5);
every statement, commit and the ping that checks a pooled connection gets ``read_timeout``
(default 30; the ping ``connect_timeout``). They come from the observer's keywords, else the
URL's query (``?connect_timeout=3&read_timeout=20``, for any driver), else the defaults. The
drivers' own settings do it where they have them (PyMySQL, mysqlclient, MariaDB Connector:
``connect_timeout``/``read_timeout``/``write_timeout``; libpq: ``connect_timeout``), and
:mod:`~prefect_sacred.observers.sql.deadline` bounds libpq's reads, which have none. So a
database that accepts TCP and never answers fails the start within ``connect_timeout`` and any
later event within ``read_timeout``, and a dead pooled connection is replaced, never reused.

SQLAlchemy is imported only when an engine is built, so that registering ``-s/--sql`` does not
need the ``sql`` extra.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect_sacred.observers.registry import ObserverConfigError
from prefect_sacred.observers.sql.deadline import watchdog
from prefect_sacred.utils import redact

__all__ = [
    "CONNECT_TIMEOUT",
    "INSTALL_HINT",
    "READ_TIMEOUT",
    "SqlObserverError",
    "Timeouts",
    "Transaction",
    "begin",
    "described_errors",
    "engine_for_url",
    "sqlalchemy_module",
]

INSTALL_HINT = "pip install 'prefect-sacred[sql]'"
#: Seconds to connect (TCP, TLS, authentication) and to ping a pooled connection.
CONNECT_TIMEOUT = 5.0
#: Seconds any statement or commit may wait for the database's reply.
READ_TIMEOUT = 30.0
_OPTION = "prefect_sacred_timeouts"  # the engine's execution option holding its Timeouts
_QUERY_KEYS = ("connect_timeout", "read_timeout")


class SqlObserverError(RuntimeError):
    """The database cannot be reached or refused the run (the message never holds a password)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect and to wait for each reply."""

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT


def sqlalchemy_module() -> Any:
    """The ``sqlalchemy`` module, or an ImportError that says which extra to install."""
    try:
        import sqlalchemy
    except ImportError:
        raise ImportError(f"SqlObserver needs SQLAlchemy: {INSTALL_HINT}") from None
    return sqlalchemy


def engine_for_url(
    url: str, echo: bool, connect_timeout: float | None = None, read_timeout: float | None = None
) -> Any:
    """An engine for ``url``; a malformed URL or a missing driver fails here, before any run.

    Args:
        url: A SQLAlchemy URL; ``connect_timeout`` and ``read_timeout`` in its query set the
            timeouts (for any driver) unless the keywords do.
        echo: Log every statement.
        connect_timeout: Seconds to connect; default the URL's, else :data:`CONNECT_TIMEOUT`.
        read_timeout: Seconds per reply; default the URL's, else :data:`READ_TIMEOUT`.
    """
    sa = sqlalchemy_module()
    try:
        parsed = sa.engine.make_url(url)
        parsed, timeouts = _timeouts_from(parsed, connect_timeout, read_timeout)
        return _create_engine(sa, parsed, echo, timeouts)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        if isinstance(exc, ObserverConfigError):
            raise
        raise ObserverConfigError(f"invalid database URL {redact(url)!r}: {redact(str(exc))}") from None
    except ImportError as exc:
        raise ImportError(f"no driver for {redact(url)!r} ({exc}): {INSTALL_HINT}") from None


def _timeouts_from(parsed: Any, connect: float | None, read: float | None) -> tuple[Any, Timeouts]:
    """The timeouts (keywords, else the URL's query, else defaults), and the URL without them."""
    given = {key: parsed.query.get(key) for key in _QUERY_KEYS}
    values: dict[str, float] = {}
    for key, keyword, default in (
        ("connect_timeout", connect, CONNECT_TIMEOUT),
        ("read_timeout", read, READ_TIMEOUT),
    ):
        raw = keyword if keyword is not None else given[key]
        if isinstance(raw, (tuple, list)):
            raw = raw[-1]
        try:
            value = float(raw) if raw is not None else default
        except ValueError:
            raise ObserverConfigError(f"{key} must be a number of seconds, not {raw!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise ObserverConfigError(f"{key} must be a positive number of seconds, not {raw!r}")
        values[key] = value
    if parsed.get_backend_name() != "sqlite":  # the driver gets them from connect_args instead
        parsed = parsed.difference_update_query(_QUERY_KEYS)
    return parsed, Timeouts(values["connect_timeout"], values["read_timeout"])


def _create_engine(sa: Any, parsed: Any, echo: bool, timeouts: Timeouts) -> Any:
    options: dict[str, Any] = {"echo": echo, "execution_options": {_OPTION: timeouts}}
    if parsed.get_backend_name() != "sqlite":
        _check_host(parsed)
        options["connect_args"] = _driver_timeouts(parsed.get_driver_name(), timeouts)
        # A connection stuck in a call is cut after `read`: waiting longer for a free one is useless.
        options["pool_timeout"] = timeouts.connect + timeouts.read
        engine = sa.create_engine(parsed, **options)
        watch(engine)
        if parsed.get_driver_name() == "pymysql":
            sa.event.listen(engine, "do_connect", _pymysql_connect)
        return engine
    if parsed.database in (None, "", ":memory:"):
        # One shared connection: per-thread connections would each see their own empty database.
        from sqlalchemy.pool import StaticPool

        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if "timeout" not in parsed.query:  # how long a writer waits for another's lock
            options["connect_args"] = {"timeout": 60}
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    engine = sa.create_engine(parsed, **options)

    # Writers take the database lock when their transaction begins (BEGIN IMMEDIATE): with
    # several processes, a deferred transaction upgrading to a write lock fails at once
    # ("database is locked") instead of waiting for the busy timeout.
    def autocommit_driver(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "connect", autocommit_driver)
    sa.event.listen(engine, "begin", begin_immediate)
    return engine


def _check_host(parsed: Any) -> None:
    """Refuse a host with ``@`` in it: the password had an unescaped ``@`` (its tail would show)."""
    if parsed.host and "@" in parsed.host:
        raise ObserverConfigError(
            f"invalid database URL {redact(parsed.render_as_string(hide_password=True))!r}: "
            "an '@' in the user name or password must be written %40"
        )


def _driver_timeouts(driver: str, timeouts: Timeouts) -> dict[str, Any]:
    """The driver's own connect/read/write timeout arguments, for the drivers that have them."""
    whole_connect = max(2, math.ceil(timeouts.connect))  # libpq takes whole seconds, at least 2
    if driver in {"psycopg", "psycopg2", "psycopg2cffi"}:
        return {"connect_timeout": whole_connect}
    if driver == "pymysql":
        return {
            "connect_timeout": timeouts.connect,
            "read_timeout": timeouts.read,
            "write_timeout": timeouts.read,
        }
    if driver in {"mysqldb", "mariadbconnector"}:
        whole_read = max(1, math.ceil(timeouts.read))
        return {"connect_timeout": whole_connect, "read_timeout": whole_read, "write_timeout": whole_read}
    return {}


def _pymysql_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """PyMySQL reads the server's greeting with the read timeout: bound it by the connect one."""
    read = cparams.get("read_timeout")
    cparams["read_timeout"] = cparams.get("connect_timeout", CONNECT_TIMEOUT)
    connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
    if hasattr(connection, "_read_timeout"):  # later reads get the read timeout again
        connection._read_timeout = read
    return connection


def timeouts_of(engine: Any) -> Timeouts:
    """The engine's timeouts (an engine given to ``create_from`` gets the defaults)."""
    found = engine.get_execution_options().get(_OPTION)
    return found if isinstance(found, Timeouts) else Timeouts()


def watch(engine: Any) -> None:
    """Bound every statement of ``engine`` by its read timeout (once per engine)."""
    sa = sqlalchemy_module()
    if engine.dialect.name == "sqlite" or sa.event.contains(engine, "before_cursor_execute", _arm):
        return
    sa.event.listen(engine, "before_cursor_execute", _arm)
    sa.event.listen(engine, "after_cursor_execute", _disarm)


def _arm(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
    watchdog.arm(conn.connection.dbapi_connection, timeouts_of(conn.engine).read)


def _disarm(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
    watchdog.disarm(conn.connection.dbapi_connection)


def begin(engine: Any) -> Transaction:
    """A transaction on a pooled connection that answers; a failure becomes a clear error.

    Each event gets its own, so that heartbeats from the heartbeat thread commit independently of
    the thread that started the run.
    """
    if engine.dialect.name == "sqlite":
        with described_errors(engine):
            return Transaction(engine.connect(), None)
    watch(engine)
    timeouts = timeouts_of(engine)
    with described_errors(engine):
        for attempt in range(2):
            connection = engine.connect()
            raw = connection.connection.dbapi_connection
            try:
                # Instead of pool_pre_ping, whose ping has no timeout: a connection the database
                # dropped (restart, failover) is replaced; one that does not answer fails the event.
                with watchdog.guard(raw, timeouts.connect):
                    engine.dialect.do_ping(raw)
            except engine.dialect.loaded_dbapi.Error as exc:
                stuck = watchdog.fired(raw, clear=True)
                connection.invalidate()
                connection.close()
                if stuck is not None:
                    raise SqlObserverError(_no_answer(engine, stuck, "connect_timeout")) from None
                if attempt:
                    raise SqlObserverError(_describe(engine, exc)) from None
                continue
            return Transaction(connection, timeouts)
    raise AssertionError("unreachable")


@contextmanager
def described_errors(engine: Any) -> Iterator[None]:
    """Turn the driver's errors into :class:`SqlObserverError` naming the database, password hidden."""
    sa = sqlalchemy_module()
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise SqlObserverError(_describe(engine, exc)) from None


def _where(engine: Any) -> str:
    return str(engine.url.render_as_string(hide_password=True))


def _describe(engine: Any, exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    # Drivers quote the connection string in some messages (e.g. psycopg's "connection to ...").
    password = engine.url.password
    if password:
        first = first.replace(str(password), "***")
    if "timed out" in first or "timeout expired" in first:
        timeouts = timeouts_of(engine)
        first += f" (connect_timeout {timeouts.connect:g} s, read_timeout {timeouts.read:g} s)"
    return redact(f"cannot use the database {_where(engine)}: {first}")


def _no_answer(engine: Any, seconds: float, setting: str) -> str:
    return redact(
        f"cannot use the database {_where(engine)}: no answer within {seconds:g} s ({setting}); "
        "it accepts connections but does not reply"
    )


class Transaction:
    """``with``: a connection in a transaction, committed on success, always closed.

    A statement, commit or rollback that overruns the read timeout fails with
    :class:`SqlObserverError` saying so, and the connection is discarded.
    """

    def __init__(self, connection: Any, timeouts: Timeouts | None) -> None:
        self._connection = connection
        self._timeouts = timeouts
        self._raw = connection.connection.dbapi_connection if timeouts is not None else None

    def __enter__(self) -> Any:
        self._connection.begin()
        return self._connection

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._timeouts is None:
            self._finish(exc_type)
            return
        error: BaseException | None = None
        try:
            with watchdog.guard(self._raw, self._timeouts.read):
                self._finish(exc_type)
        except Exception as finishing:  # on a cut connection, the rollback fails too
            error = finishing
        stuck = watchdog.fired(self._raw, clear=True)
        if stuck is not None:
            with _quietly():
                self._connection.invalidate()
            raise SqlObserverError(_no_answer(self._connection.engine, stuck, "read_timeout")) from None
        if error is not None:
            raise error

    def _finish(self, exc_type: Any) -> None:
        try:
            if exc_type is None:
                self._connection.commit()
            else:
                self._connection.rollback()
        finally:
            self._connection.close()


@contextmanager
def _quietly() -> Iterator[None]:
    try:
        yield
    except Exception:  # already closed: nothing to discard
        pass
