"""The SqlObserver's way to its database: one engine per URL, short transactions, and errors that
say which database failed without ever showing its password.

SQLAlchemy is imported only when an engine is built, so that registering ``-s/--sql`` does not
need the ``sql`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect_sacred.observers.registry import ObserverConfigError
from prefect_sacred.utils import redact

__all__ = [
    "INSTALL_HINT",
    "SqlObserverError",
    "Transaction",
    "begin",
    "described_errors",
    "engine_for_url",
    "sqlalchemy_module",
]

INSTALL_HINT = "pip install 'prefect-sacred[sql]'"


class SqlObserverError(RuntimeError):
    """The database cannot be reached or refused the run (the message never holds a password)."""


def sqlalchemy_module() -> Any:
    """The ``sqlalchemy`` module, or an ImportError that says which extra to install."""
    try:
        import sqlalchemy
    except ImportError:
        raise ImportError(f"SqlObserver needs SQLAlchemy: {INSTALL_HINT}") from None
    return sqlalchemy


def engine_for_url(url: str, echo: bool) -> Any:
    """An engine for ``url``; a malformed URL or a missing driver fails here, before any run."""
    sa = sqlalchemy_module()
    try:
        return _create_engine(sa, url, echo)
    except sa.exc.ArgumentError as exc:
        raise ObserverConfigError(f"invalid database URL {redact(url)!r}: {exc}") from None
    except ImportError as exc:
        raise ImportError(f"no driver for {redact(url)!r} ({exc}): {INSTALL_HINT}") from None


def _create_engine(sa: Any, url: str, echo: bool) -> Any:
    parsed = sa.engine.make_url(url)
    options: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, **options)
    if parsed.database in (None, "", ":memory:"):
        # One shared connection: per-thread connections would each see their own empty database.
        from sqlalchemy.pool import StaticPool

        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
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


def begin(engine: Any) -> Transaction:
    """A transaction on a pooled connection; a failure to connect becomes a clear error.

    Each event gets its own, so that heartbeats from the heartbeat thread commit independently of
    the thread that started the run.
    """
    with described_errors(engine):
        return Transaction(engine.connect())


@contextmanager
def described_errors(engine: Any) -> Iterator[None]:
    """Turn the driver's errors into :class:`SqlObserverError` naming the database, password hidden."""
    sa = sqlalchemy_module()
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise SqlObserverError(_describe(engine, exc)) from None


def _describe(engine: Any, exc: BaseException) -> str:
    where = engine.url.render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    # Drivers quote the connection string in some messages (e.g. psycopg's "connection to ...").
    password = engine.url.password
    if password:
        reason = reason.replace(str(password), "***")
    return redact(f"cannot use the database {where}: {reason}")


class Transaction:
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
