"""How run data is encoded: Sacred's jsonpickle ``flatten`` plus timestamp helpers.

Everything a user puts into config, ``info`` or a result is stored, never rejected: values that
JSON cannot express are encoded by jsonpickle (numpy and pandas included), exactly as Sacred does.
A value that cannot be encoded is stored *in its place* as a marked repr,
``{"py/unencodable": "<repr>", "py/error": "<why>"}``, with one :class:`UnencodableValueWarning`, so
the record around it keeps its structure (a result whose ``__getstate__`` raises leaves
``run.json`` with its status and times). A container class with ``__recorded_plain__ = True``
(the config's read-only dict and list) is stored as the plain container it copies to. Cannot be
encoded: an object whose pickling protocol
raises, a lock, and an iterator or generator (encoding one would consume it, or never end).
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import json
import sys
import threading
import types
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonpickle

__all__ = [
    "UNENCODABLE",
    "UnencodableValueWarning",
    "flatten",
    "isoformat",
    "marked_repr",
    "restore",
    "utcnow",
]

#: The key of a marked repr. Not jsonpickle's ``py/repr`` tag: ``restore`` would try to rebuild
#: the object from it; this one restores as the plain dict it is.
UNENCODABLE = "py/unencodable"


class UnencodableValueWarning(UserWarning):
    """A config, ``info`` or result value could not be encoded and is stored as its repr."""


_LOCKS = (type(threading.Lock()), type(threading.RLock()))
_CONSUMED = (Iterator, AsyncIterator, types.CoroutineType)

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
        return json.loads(jsonpickle.encode(obj, keys=True, context=_MarkingPickler(keys=True)))
    except Exception as exc:  # a failure outside any one value (the pickler itself)
        return marked_repr(obj, exc)


def marked_repr(obj: Any, error: BaseException | str) -> dict[str, str]:
    """``{"py/unencodable": repr(obj), "py/error": why}``, the stand-in for a value that cannot be
    encoded; warns once per kind of failure."""
    why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        text = repr(obj)
    except Exception:  # a __repr__ that raises too
        text = object.__repr__(obj)
    warnings.warn(
        f"a value of type {type(obj).__name__} cannot be encoded ({why}); it is stored as its repr",
        UnencodableValueWarning,
        stacklevel=2,
    )
    return {UNENCODABLE: text, "py/error": why}


class _MarkingPickler(jsonpickle.Pickler):  # type: ignore[misc]
    """jsonpickle's encoder, with each value that fails replaced by a marked repr where it is.

    ``_flatten_obj`` is called once per container or object at every depth, so a failure is
    caught at the innermost value that caused it and everything around it is encoded as usual.
    """

    def _flatten_obj(self, obj: Any) -> Any:
        if getattr(type(obj), "__recorded_plain__", False):  # the config's read-only containers
            obj = copy.copy(obj)
        if isinstance(obj, _LOCKS):
            return marked_repr(obj, "a lock cannot be stored")
        if isinstance(obj, _CONSUMED) and not isinstance(obj, (str, bytes, dict, list, tuple)):
            return marked_repr(obj, "an iterator is not stored: encoding it would consume it")
        try:
            return super()._flatten_obj(obj)
        except Exception as exc:
            return marked_repr(obj, exc)


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
