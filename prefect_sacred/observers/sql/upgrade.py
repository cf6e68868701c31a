"""Making a database ready: the missing tables created, and one Sacred 0.8.7 created upgraded.

Sacred's tables are ours with narrower columns and without our additions. The upgrade adds the
missing columns, widens the narrow ones (PostgreSQL and MariaDB enforce lengths; SQLite does
not), turns MariaDB's 64 KB ``TEXT``/``BLOB`` into ``LONGTEXT``/``LONGBLOB`` and its timestamps
to microseconds, and adds ``QUEUED`` to the run status. Existing rows are kept as they are, and
Sacred's own models still read every table. The missing tables are then created as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from prefect_sacred.observers.sql.schema import MYSQL, STATUSES, metadata

__all__ = ["create_tables", "upgrade_in_place"]


def _quote(dialect: sa.engine.Dialect, name: str) -> str:
    return dialect.identifier_preparer.quote(name)


def _needs_widening(existing: Any, wanted: sa.Column[Any], dialect_name: str) -> bool:
    """Whether Sacred's column is narrower than ours (never primary keys or the status enum)."""
    wanted_type, found = wanted.type, type(existing).__name__.upper()
    if wanted.primary_key or isinstance(wanted_type, (sa.Enum, sa.Integer, sa.Boolean)):
        return False
    if isinstance(wanted_type, sa.String) and wanted_type.length is not None:
        return bool(getattr(existing, "length", None) and existing.length < wanted_type.length)
    if dialect_name not in MYSQL:
        return False
    # MariaDB: Sacred's TEXT/BLOB stop at 64 KB, its DATETIME at seconds, its FLOAT is single.
    if isinstance(wanted_type, sa.Text):
        return found != "LONGTEXT"
    if isinstance(wanted_type, sa.LargeBinary):
        return found != "LONGBLOB"
    if isinstance(wanted_type, sa.DateTime):
        return getattr(existing, "fsp", None) != 6
    if isinstance(wanted_type, sa.Float):
        return found != "DOUBLE"
    return False


def upgrade_in_place(begin: Callable[[], Any], dialect_name: str) -> None:
    """Add and widen the columns of Sacred's tables (each statement idempotent on its own)."""
    with begin() as conn:
        dialect = conn.dialect
        inspector = sa.inspect(conn)
        names = set(inspector.get_table_names())
        statements: list[str] = []
        for table in metadata.sorted_tables:
            if table.name not in names:
                continue
            existing = {column["name"]: column["type"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                kind = column.type.compile(dialect=dialect)
                target = f"{_quote(dialect, table.name)}"
                if column.name not in existing:
                    statements.append(
                        f"ALTER TABLE {target} ADD COLUMN {_quote(dialect, column.name)} {kind}"
                    )
                elif dialect_name != "sqlite" and _needs_widening(
                    existing[column.name], column, dialect_name
                ):
                    name = _quote(dialect, column.name)
                    if dialect_name == "postgresql":
                        statements.append(f"ALTER TABLE {target} ALTER COLUMN {name} TYPE {kind}")
                    else:
                        statements.append(f"ALTER TABLE {target} MODIFY COLUMN {name} {kind}")
        if dialect_name in MYSQL:
            values = ", ".join(f"'{status}'" for status in STATUSES)
            statements.append(f"ALTER TABLE {_quote(dialect, 'run')} MODIFY COLUMN status ENUM({values})")
        if dialect_name in MYSQL and statements:
            # MariaDB changes no column a foreign key uses: those on run.run_id are dropped first
            # and made again once the columns are as wide as each other.
            dropped, restored = [], []
            for table in sorted(names):
                for key in inspector.get_foreign_keys(table):
                    if key.get("referred_table") != "run" or not key.get("name"):
                        continue
                    name, columns = _quote(dialect, key["name"]), ", ".join(key["constrained_columns"])
                    referred = ", ".join(key["referred_columns"])
                    dropped.append(f"ALTER TABLE {_quote(dialect, table)} DROP FOREIGN KEY {name}")
                    restored.append(
                        f"ALTER TABLE {_quote(dialect, table)} ADD CONSTRAINT {name} "
                        f"FOREIGN KEY ({columns}) REFERENCES {_quote(dialect, 'run')} ({referred})"
                    )
            statements = [*dropped, *statements, *restored]
        for statement in statements:
            conn.execute(sa.text(statement))
    if dialect_name == "postgresql":
        # A new enum value must be committed before use: its own transaction.
        with begin() as conn:
            conn.execute(sa.text("ALTER TYPE status_enum ADD VALUE IF NOT EXISTS 'QUEUED'"))


def create_tables(begin: Callable[[], Any], dialect: str) -> None:
    """Create the missing tables; concurrent first uses serialize on a database lock or retry.

    Args:
        begin: Opens a transaction (a context manager yielding the connection).
        dialect: The engine's dialect name, which decides the kind of lock.
    """
    for attempt in range(5):
        with begin() as conn:
            inspector = sa.inspect(conn)
            names = set(inspector.get_table_names())
            current = "run" not in names or "meta_json" in {c["name"] for c in inspector.get_columns("run")}
            if names >= set(metadata.tables) and current:
                return
        if not current:  # a database Sacred created: widen and add in place, then create the rest
            upgrade_in_place(begin, dialect)
        try:
            with begin() as conn:
                if dialect == "postgresql":  # released at commit
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7251009)"))
                    metadata.create_all(conn, checkfirst=True)
                elif dialect in MYSQL:  # DDL commits implicitly: a session lock instead
                    conn.execute(sa.text("SELECT GET_LOCK('prefect_sacred_schema', 60)"))
                    try:
                        metadata.create_all(conn, checkfirst=True)
                    finally:
                        conn.execute(sa.text("SELECT RELEASE_LOCK('prefect_sacred_schema')"))
                else:
                    metadata.create_all(conn, checkfirst=True)
            return
        except sa.exc.DBAPIError:
            # Another process created a table or type between our check and our CREATE.
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
