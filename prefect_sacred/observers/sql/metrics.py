"""Metric points for the ``metric`` table: checked, then written in one bulk insert per batch.

Points are checked before the insert because a batch that fails is sent again: a single point
the database refuses (a step beyond BIGINT, a name longer than the column or holding a NUL that
PostgreSQL refuses) would otherwise fail every retry, and every later batch behind it.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from typing import Any

__all__ = ["MetricRow", "finite", "insert_metrics", "metric_rows", "split_step"]

#: ``(run_id, name, step, step_exact, value, timestamp)``, the ``metric`` columns in that order.
MetricRow = tuple[str, str, int, float | None, float | None, dt.datetime]

_COLUMNS = ("run_id", "name", "step", "step_exact", "value", "timestamp")
_BIGINT = 2**63
_NAME_LENGTH = 255  # metric.name
# SQLAlchemy's own text format for DateTime on SQLite, so its readers parse what we write.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def finite(value: Any) -> float | None:
    """``value`` as a float; NaN and infinities become None (MariaDB and SQLite cannot store them)."""
    number = float(value)
    return number if math.isfinite(number) else None


def split_step(step: Any) -> tuple[int, float | None]:
    """``(step, None)`` for a whole step, ``(floor(step), step)`` for one that is not.

    Sacred's steps are integers, but ``log_scalar`` accepts any number and the other observers
    keep it as given: the floor keeps the index ordering points, the exact value keeps 0.5 from
    being stored as 0.

    Raises:
        TypeError, ValueError: ``step`` is not a finite number within BIGINT's range.
    """
    if type(step) is not int:
        if isinstance(step, (str, bytes)):
            raise TypeError(f"step {step!r} is not a number")
        try:
            step = operator.index(step)  # numpy and other integer types, exactly
        except TypeError:
            number = float(step)
            if not math.isfinite(number):
                raise ValueError(f"step {step!r} is not a finite number") from None
            if not number.is_integer():
                return _bigint(math.floor(number), step), number
            step = int(number)
    return _bigint(step, step), None


def _bigint(whole: int, step: Any) -> int:
    if not -_BIGINT <= whole < _BIGINT:
        raise ValueError(f"step {step!r} is beyond the range of a 64-bit integer")
    return whole


def metric_rows(
    run_key: str, metrics_by_name: dict[str, dict[str, list[Any]]]
) -> tuple[list[MetricRow], list[str]]:
    """The rows for ``metrics_by_name``, and one message per metric with points that cannot be
    stored (those points are left out; the others are kept)."""
    rows: list[MetricRow] = []
    refused: list[str] = []
    for name, series in metrics_by_name.items():
        if len(name) > _NAME_LENGTH:
            refused.append(f"metric {name[:40]!r}...: the name is longer than {_NAME_LENGTH} characters")
            continue
        if "\0" in name:
            refused.append(f"metric {name!r}: the name holds a NUL character")
            continue
        dropped, first_reason = 0, ""
        for step, value, stamp in zip(series["steps"], series["values"], series["timestamps"], strict=False):
            try:
                whole, exact = split_step(step)
            except (TypeError, ValueError) as exc:
                dropped, first_reason = dropped + 1, first_reason or str(exc)
                continue
            try:
                number = finite(value)
            except (TypeError, ValueError, OverflowError):
                dropped, first_reason = dropped + 1, first_reason or f"value {value!r} is not a number"
                continue
            rows.append((run_key, name, whole, exact, number, stamp))
        if dropped:
            refused.append(f"metric {name!r}: {dropped} point(s) not recorded, e.g. {first_reason}")
    return rows, refused


def _sqlite_datetime(value: dt.datetime) -> str:
    """SQLAlchemy's SQLite text for ``value``; ``isoformat`` is several times faster than
    ``strftime`` and writes the same text for the years it covers (1000 and later)."""
    if value.year >= 1000 and value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    return value.strftime(_SQLITE_DATETIME)


def insert_metrics(conn: Any, rows: list[MetricRow]) -> None:
    """One bulk insert. On SQLite straight through the driver's executemany: SQLAlchemy's
    per-row parameter processing would cost more than SQLite's own inserts."""
    from prefect_sacred.observers.sql import schema as t

    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            f"INSERT INTO metric ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
            [(*row[:5], _sqlite_datetime(row[5])) for row in rows],
        )
    else:
        conn.execute(t.metric.insert(), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
