"""How run data is encoded: Sacred's jsonpickle ``flatten`` plus timestamp helpers.

Everything a user puts into config, ``info`` or a result is stored, never rejected: values that
JSON cannot express are encoded by jsonpickle (numpy and pandas included), exactly as Sacred does,
and the rare object jsonpickle itself chokes on is stored as its ``repr``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
from typing import Any

import jsonpickle

__all__ = ["flatten", "isoformat", "restore", "utcnow"]

# jsonpickle's numpy and pandas handlers import those packages. They are registered only once
# the program imported them itself (a value of theirs can exist only then), so a run that uses
# neither never pays for their import (about 1.5 s).
_registered: set[str] = set()


def _register_handlers() -> None:
    for package in ("numpy", "pandas"):
        if package in _registered or package not in sys.modules:
            continue
        _registered.add(package)
        extension = importlib.import_module(f"jsonpickle.ext.{package}")
        extension.register_handlers()


def flatten(obj: Any) -> Any:
    """Encode ``obj`` into plain JSON types the way Sacred does (jsonpickle, ``keys=True``)."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    _register_handlers()
    try:
        return json.loads(jsonpickle.encode(obj, keys=True))
    except Exception:  # a hostile __getstate__ or similar: keep the run alive, keep a trace
        return {"py/repr": repr(obj)}


def restore(flat: Any) -> Any:
    """Decode what :func:`flatten` produced back into Python objects."""
    _register_handlers()
    return jsonpickle.decode(json.dumps(flat), keys=True)


def utcnow() -> dt.datetime:
    """Naive UTC now, the timestamp convention of every Sacred format."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO 8601 that always carries microseconds (Sacredboard parses ``%Y-%m-%dT%H:%M:%S.%f``)."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
