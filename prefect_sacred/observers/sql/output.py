"""A run's captured output in the SQL tables: appended beat by beat, gathered at the end.

The output is ``run.captured_out`` followed by the ``run_output`` rows in ``seq`` order, at any
time; ``run.captured_out`` is NULL until the first beat, as Sacred leaves it, and appending
treats NULL as empty. Appending to a cell makes the database rewrite the whole cell (SQLite,
PostgreSQL's TOAST and MySQL alike: 135 ms a beat at 20 MB on SQLite), so while the run is live
``run.captured_out`` holds the first ``LIVE_CELL`` bytes and the rest goes to ``run_output``
rows of about ``ROW`` bytes: a beat costs what is new, plus at most one such cell.
:func:`gather_output` moves it all into ``run.captured_out`` at the end of the run, where
Sacred's readers expect it, unless it is more than one MySQL/MariaDB packet can carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_sacred.observers.sql.engine import sqlalchemy_module

if TYPE_CHECKING:
    from prefect_sacred.observers.base import OutputDelta

__all__ = ["LIVE_CELL", "PIECE", "ROW", "StoredOutput", "append_output", "gather_output"]

# MySQL/MariaDB refuse statements (and values built by CONCAT) above max_allowed_packet: output
# is sent in pieces this large at most.
PIECE = 1 << 20
# Bytes a live run keeps in run.captured_out, and in each run_output row.
LIVE_CELL = 64 * 1024
ROW = 64 * 1024


@dataclass(frozen=True)
class StoredOutput:
    """What is stored of a run's output: ``chars`` characters (-1: unknown), ``cout_bytes`` of
    them in ``run.captured_out``, the rest in ``run_output`` rows ``1..seq``, the last one
    ``row_bytes`` long."""

    chars: int = 0
    cout_bytes: int = 0
    seq: int = 0
    row_bytes: int = 0


def append_output(
    conn: Any,
    run_key: str,
    stored: StoredOutput,
    captured_out: str,
    output_delta: OutputDelta | None,
    cell_limit: float,
) -> StoredOutput:
    """Append what ``output_delta`` adds to ``stored``; write all of ``captured_out`` when it
    does not continue it (or there is no delta). Returns what is stored once ``conn`` commits."""
    from prefect_sacred.observers.sql import schema as t

    sa = sqlalchemy_module()
    run, rows = t.run, t.run_output
    key, piece_param = sa.bindparam("key"), sa.bindparam("piece", type_=sa.Text())
    chars, cout_bytes, seq, row_bytes = stored.chars, stored.cout_bytes, stored.seq, stored.row_bytes
    new = output_delta.appended_to(chars) if output_delta is not None else None
    if new is None:
        conn.execute(run.update().where(run.c.run_id == run_key).values(captured_out=""))
        conn.execute(rows.delete().where(rows.c.run_id == run_key))
        chars, cout_bytes, seq, row_bytes, new = 0, 0, 0, 0, captured_out
    elif not new and cout_bytes == 0 and seq == 0:
        # A beat without output still ends "never beat": the NULL left by started_event becomes ''.
        unset = run.update().where(run.c.run_id == key).values(captured_out=_coalesce(run.c.captured_out))
        conn.execute(unset, {"key": run_key})
    cell = min(cell_limit, LIVE_CELL)
    # Text goes in execution parameters, never into a statement: SQLAlchemy keeps the first
    # statement of each shape in its compiled cache, and with it the values it was built with.
    for start in range(0, len(new), PIECE):
        piece = new[start : start + PIECE]
        size = len(piece.encode("utf-8", "replace"))
        if seq == 0 and cout_bytes + size <= cell:
            append = run.update().where(run.c.run_id == key)
            append = append.values(captured_out=_coalesce(run.c.captured_out).concat(piece_param))
            conn.execute(append, {"key": run_key, "piece": piece})
            cout_bytes += size
        elif seq > 0 and row_bytes + size <= ROW:
            append = rows.update().where(rows.c.run_id == key, rows.c.seq == sa.bindparam("row"))
            append = append.values(chunk=_coalesce(rows.c.chunk).concat(piece_param))
            conn.execute(append, {"key": run_key, "row": seq, "piece": piece})
            row_bytes += size
        else:
            seq += 1
            conn.execute(rows.insert(), {"run_id": run_key, "seq": seq, "chunk": piece})
            row_bytes = size
    return StoredOutput(chars + len(new), cout_bytes, seq, row_bytes)


def gather_output(conn: Any, run_key: str, stored: StoredOutput, cell_limit: float) -> None:
    """Move the ``run_output`` rows into ``run.captured_out`` (the end of a run).

    They stay when the whole output is more than ``cell_limit`` bytes.
    """
    from prefect_sacred.observers.sql import schema as t

    if stored.seq == 0 and stored.chars >= 0:
        return  # all of it is in run.captured_out
    sa = sqlalchemy_module()
    run, rows = t.run, t.run_output
    chunks = conn.execute(
        sa.select(rows.c.chunk).where(rows.c.run_id == run_key).order_by(rows.c.seq)
    ).scalars()
    rest = "".join(chunk or "" for chunk in chunks)
    if not rest:
        return
    head = conn.execute(sa.select(run.c.captured_out).where(run.c.run_id == run_key)).scalar()
    whole = (head or "") + rest
    if len(whole.encode("utf-8", "replace")) > cell_limit:
        return
    update = run.update().where(run.c.run_id == sa.bindparam("key"))
    conn.execute(update.values(captured_out=sa.bindparam("whole")), {"key": run_key, "whole": whole})
    conn.execute(rows.delete().where(rows.c.run_id == run_key))


def _coalesce(column: Any) -> Any:
    sa = sqlalchemy_module()
    return sa.func.coalesce(column, sa.literal("", sa.Text()), type_=sa.Text())
