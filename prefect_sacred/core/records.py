"""How a run's journal is written and read: one JSON object per line, numbered.

Every record has ``seq`` (0, 1, 2...) and ``kind``:

* ``run``: the run's identity (run id, flow run id, pid, host, start), the first record;
* ``points``: metric points, ``{name: {"steps": [...], "values": [...], "t": [unix
  microseconds, ...]}}``, a record per ``CHUNK_POINTS`` points at most;
* ``output``: captured output (raw, before ``captured_out_filter``), appended in order;
* ``event``: an observer event, written before any observer is given it. ``log_metrics``
  carries no points: it delivers every ``points`` record since the previous ``log_metrics``;
  ``heartbeat_event`` carries no output: its ``captured_out`` is every ``output`` record
  before it.

Values JSON cannot express are encoded with :func:`~prefect_sacred.serialization.flatten`, key
by key, so one value that cannot be encoded becomes a marked repr and never costs the record.
A process killed mid-write leaves a torn last line: readers ignore it, writers cut it off.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from prefect_sacred.serialization import UNENCODABLE, flatten, restore

if TYPE_CHECKING:
    from prefect_sacred.core.metrics import PointBatch

__all__ = [
    "decode_time",
    "dump_record",
    "encode_points",
    "encode_time",
    "encode_value",
    "parse_records",
    "restore_points",
    "restore_value",
]

_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


def encode_value(value: Any) -> Any:
    """``value`` as plain JSON types (Sacred's jsonpickle encoding); a marked repr at worst.

    A dict whose whole encoding fails is encoded key by key, so only the bad entry is a repr.
    """
    flat = flatten(value)
    if isinstance(value, dict) and isinstance(flat, dict) and (UNENCODABLE in flat or "py/repr" in flat):
        return {"py/dict-by-key": [[flatten(key), flatten(item)] for key, item in value.items()]}
    return flat


def restore_value(flat: Any) -> Any:
    """The Python value :func:`encode_value` encoded (a marked repr stays a marked repr)."""
    if isinstance(flat, dict) and set(flat) == {"py/dict-by-key"}:
        return {_restore_key(key): restore_value(item) for key, item in flat["py/dict-by-key"]}
    try:
        return restore(flat)
    except Exception:  # an encoded class that no longer imports: keep the encoding
        return flat


def _restore_key(flat: Any) -> Any:
    key = restore_value(flat)
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def encode_time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def decode_time(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def encode_points(points: PointBatch | dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
    """Metric points as columns per name: steps, values, unix microseconds.

    ``points`` is a packed :class:`~prefect_sacred.core.metrics.PointBatch` (read directly) or
    Sacred's ``metrics_by_name``. Values JSON cannot express are encoded by :func:`dump_record`
    (``encode_value``).
    """
    if isinstance(points, dict):
        return {
            str(name): {
                "steps": metric["steps"],
                "values": metric["values"],
                "t": [(stamp - _EPOCH) // _MICROSECOND for stamp in metric["timestamps"]],
            }
            for name, metric in points.items()
        }
    # The same microseconds as the datetimes the observers are given (timedelta rounds them).
    return {
        str(name): {
            "steps": steps,
            "values": values,
            "t": [dt.timedelta(seconds=stamp) // _MICROSECOND for stamp in stamps],
        }
        for name, steps, values, stamps in points.columns()
    }


def restore_points(points: dict[str, dict[str, list[Any]]], into: dict[str, dict[str, list[Any]]]) -> None:
    """Add encoded points to ``into``, a ``metrics_by_name`` being built."""
    for name, columns in points.items():
        metric = into.get(name)
        if metric is None:
            metric = into[name] = {"steps": [], "values": [], "timestamps": []}
            metric["name"] = name  # type: ignore[assignment]
        metric["steps"].extend(_restored(step) for step in columns["steps"])
        metric["values"].extend(_restored(value) for value in columns["values"])
        metric["timestamps"].extend(_EPOCH + dt.timedelta(microseconds=micros) for micros in columns["t"])


def _restored(value: Any) -> Any:
    return restore_value(value) if isinstance(value, dict) else value


def dump_record(record: dict[str, Any]) -> str:
    """One journal line (with its newline). Never raises for the values the journal writes."""
    try:
        return json.dumps(record, default=encode_value, allow_nan=True) + "\n"
    except (TypeError, ValueError):  # e.g. a float subclass json refuses: each field on its own
        safe = {key: _json_or_repr(value) for key, value in record.items()}
        return json.dumps(safe, allow_nan=True) + "\n"


def _json_or_repr(value: Any) -> Any:
    try:
        json.dumps(value, default=encode_value, allow_nan=True)
        return value
    except (TypeError, ValueError):
        return {"py/repr": repr(value)}


def parse_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records in a journal's bytes, and how many bytes hold complete lines.

    A last line without its newline (the process died mid-write) is not a record; nor is a line
    that does not parse, which only a torn write can leave, at the end.
    """
    records: list[dict[str, Any]] = []
    complete = data.rfind(b"\n") + 1
    for line in data[:complete].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            records.append(record)
    return records, complete
