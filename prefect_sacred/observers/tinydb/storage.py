"""How TinyDbObserver stores runs: Sacred's tags in ``metadata.json``, files in HashFS, and the
per-run files beside them (metrics and live captured output).

Dates are ``"{TinyDate}:2016-11-12T01:18:00.228352"`` and file references
``"{TinyFile}:\\"<md5>\\""``, as Sacred writes them; numpy arrays (``{TinyArray}``) and pandas
frames and series (``{TinyDataFrame}``, ``{TinySeries}``) as Sacred tags them. tinydb, hashfs,
numpy and pandas are imported only when used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
from typing import Any

from prefect_sacred.observers.files import write_atomic
from prefect_sacred.serialization import flatten

__all__ = [
    "FINISHED",
    "INSTALL_HINT",
    "TinyFileRef",
    "TinyJsonStorage",
    "decode_value",
    "encode_value",
    "open_db_and_fs",
    "require",
    "run_file",
]

INSTALL_HINT = "pip install 'prefect-sacred[tinydb]'"
_DATE = "{TinyDate}:"
_FILE = "{TinyFile}:"
_ARRAY = "{TinyArray}:"
_FRAME = "{TinyDataFrame}:"
_SERIES = "{TinySeries}:"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
FINISHED = {"COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT"}


def require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"TinyDbObserver needs {module}: {INSTALL_HINT}") from None


class TinyFileRef(str):
    """The md5 id of a file in ``hashfs/``: written as ``{TinyFile}:"<id>"``."""


def encode_value(value: Any) -> Any:
    """Turn a record into what ``metadata.json`` holds (Sacred's tags for dates and files)."""
    if isinstance(value, TinyFileRef):
        return _FILE + json.dumps(str(value))
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dt.datetime):
        return _DATE + value.strftime(_DATE_FORMAT)
    if isinstance(value, dict):
        return {
            str(key) if not isinstance(key, str) else key: encode_value(item) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [encode_value(item) for item in value]
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:
            return _ARRAY + json.dumps(value.tolist())
        if hasattr(value, "item"):
            return encode_value(value.item())
    if module == "pandas":
        kind = type(value).__name__
        if kind == "DataFrame":
            return _FRAME + value.to_json()
        if kind == "Series":
            return _SERIES + value.to_json()
    return flatten(value)  # sets, user objects...: jsonpickle, as the other observers store them


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value` (files become :class:`TinyFileRef`, not handles)."""
    if isinstance(value, str):
        if value.startswith(_DATE):
            return dt.datetime.strptime(value[len(_DATE) :], _DATE_FORMAT)
        if value.startswith(_FILE):
            return TinyFileRef(json.loads(value[len(_FILE) :]))
        if value.startswith(_ARRAY):
            import numpy

            return numpy.array(json.loads(value[len(_ARRAY) :]))
        if value.startswith(_FRAME) or value.startswith(_SERIES):
            import pandas

            frame = value.startswith(_FRAME)
            payload = value[len(_FRAME if frame else _SERIES) :]
            # dtype=False: keep the JSON numbers as written (inference turns 1.0 into 1).
            return pandas.read_json(io.StringIO(payload), typ="frame" if frame else "series", dtype=False)
        return value
    if isinstance(value, dict):
        return {key: decode_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    return value


class TinyJsonStorage:
    """A TinyDB storage: the JSON file with Sacred's tags, re-read on every access and
    replaced atomically on every write (callers hold the directory lock around writes)."""

    def __init__(self, path: str, **_: Any) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The whole database, decoded; None when the file is missing or empty."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        decoded: dict[str, dict[str, Any]] = decode_value(json.loads(text))
        return decoded

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Encode ``data`` and replace the file with it atomically."""
        # Key order is kept: TinyDB lists documents in file order, the order runs were created.
        text = json.dumps(encode_value(data), indent=1)
        write_atomic(self.path, text, durable=True)

    def close(self) -> None:
        """Nothing stays open between accesses."""


def open_db_and_fs(root: str) -> tuple[Any, Any]:
    """TinyDB on ``root/metadata.json`` and HashFS on ``root/hashfs`` (created if missing)."""
    tinydb = require("tinydb")
    hashfs = require("hashfs")
    os.makedirs(root, exist_ok=True)
    db = tinydb.TinyDB(os.path.join(root, "metadata.json"), storage=_storage_class())
    fs = hashfs.HashFS(os.path.join(root, "hashfs"), depth=3, width=2, algorithm="md5")
    return db, fs


def _storage_class() -> type:
    tinydb = require("tinydb")
    # TinyDB checks storages against its ABC; register ours without importing tinydb at module load.
    tinydb.storages.Storage.register(TinyJsonStorage)
    return TinyJsonStorage


def run_file(root: str, folder: str, run_id: Any, suffix: str) -> str:
    """``root/folder/<run id><suffix>``; an id that is not a safe file name is replaced by its md5."""
    name = str(run_id)
    if not name or name.startswith(".") or any(char in name for char in "/\\\0"):
        name = hashlib.md5(name.encode()).hexdigest()
    return os.path.join(root, folder, f"{name}{suffix}")
