"""The TinyDB wing: :class:`TinyDbObserver` and :class:`TinyDbReader`, in Sacred's TinyDB layout.

Importing this package registers ``-t/--tiny_db BASEDIR`` and ``tinydb://`` URLs and imports
nothing else: the observer (with tinydb and hashfs) is imported when a flag or URL builds one or
a name below is first used. Modules: :mod:`.observer` (the events), :mod:`.reader` (queries and
reports) and :mod:`.storage` (Sacred's tags, the JSON storage, per-run file paths).

Requires ``pip install 'prefect-sacred[tinydb]'``.
"""

from __future__ import annotations

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.observers import registry as _registry

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.base import ObserverLike
    from prefect_sacred.observers.tinydb.observer import TinyDbObserver
    from prefect_sacred.observers.tinydb.reader import TinyDbReader
    from prefect_sacred.observers.tinydb.storage import (
        TinyFile,
        TinyFileRef,
        TinyJsonStorage,
        decode_value,
        encode_value,
    )

__all__ = [
    "TinyDbObserver",
    "TinyDbReader",
    "TinyFile",
    "TinyFileRef",
    "TinyJsonStorage",
    "decode_value",
    "encode_value",
]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "TinyDbObserver": f"{__name__}.observer",
        "TinyDbReader": f"{__name__}.reader",
        **dict.fromkeys(
            ("TinyFile", "TinyFileRef", "TinyJsonStorage", "decode_value", "encode_value"),
            f"{__name__}.storage",
        ),
    },
)


@_registry.register_observer_option("-t", "--tiny_db", "BASEDIR", "Add a TinyDB observer (Sacred's layout).")
def _tinydb_option(value: str) -> ObserverLike:
    from prefect_sacred.observers.tinydb.observer import TinyDbObserver

    if not value.strip():
        raise _registry.ObserverConfigError("BASEDIR must not be empty")
    try:
        return TinyDbObserver(value)
    except ImportError as exc:
        raise _registry.ObserverConfigError(str(exc)) from None


@_registry.register_url_scheme("tinydb")
def _tinydb_url(url: str) -> ObserverLike:
    """``tinydb://./runs_db`` (relative) or ``tinydb:///abs/path``."""
    path = url[len("tinydb://") :]
    if not path:
        raise _registry.ObserverConfigError("tinydb:// URL without a path")
    return _tinydb_option(path)
