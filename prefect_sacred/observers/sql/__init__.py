"""The SQL wing: :class:`SqlObserver` on any SQLAlchemy database, in Sacred's schema.

Importing this package registers ``-s/--sql DB_URL`` and the SQLAlchemy URL schemes
(``sqlite://``, ``postgresql://``, ``mysql+pymysql://`` ...) and imports nothing else: the
observer, and with it SQLAlchemy, is imported when a flag or URL builds one or a name below is
first used. Modules: :mod:`.observer` (the events), :mod:`.engine` (connections and errors),
:mod:`.schema` (tables), :mod:`.shared_rows` (host, experiment, resources), :mod:`.metrics`
(metric points) and :mod:`.output` (captured output).

Requires ``pip install 'prefect-sacred[sql]'``.
"""

from __future__ import annotations

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.observers import registry as _registry

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.base import ObserverLike
    from prefect_sacred.observers.sql.engine import SqlObserverError
    from prefect_sacred.observers.sql.observer import SqlObserver

__all__ = ["SqlObserver", "SqlObserverError"]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "SqlObserver": f"{__name__}.observer",
        "SqlObserverError": f"{__name__}.engine",
    },
)


@_registry.register_observer_option("-s", "--sql", "DB_URL", "Add an SQL observer (any SQLAlchemy URL).")
def _sql_option(value: str) -> ObserverLike:
    from prefect_sacred.observers.sql.observer import SqlObserver

    if not value.strip():
        raise _registry.ObserverConfigError("DB_URL must not be empty")
    if value.startswith("postgres://"):  # Heroku-style alias SQLAlchemy no longer accepts
        value = "postgresql://" + value[len("postgres://") :]
    try:
        return SqlObserver(value)
    except ImportError as exc:
        raise _registry.ObserverConfigError(str(exc)) from None


@_registry.register_url_scheme(
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
def _sql_url(url: str) -> ObserverLike:
    """``sqlite:///runs.db``, ``postgresql://...``, ``mysql+pymysql://...``: any SQLAlchemy URL."""
    return _sql_option(url)
