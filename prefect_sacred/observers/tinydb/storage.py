"""How TinyDbObserver stores runs: Sacred's tags in ``metadata.json``, files in HashFS, and the
per-run files beside them (metrics and live captured output).

Dates are ``"{TinyDate}:2016-11-12T01:18:00.228352"`` and file references
``"{TinyFile}:\\"<md5>\\""``, as Sacred writes them; numpy arrays (``{TinyArray}``) and pandas
frames and series (``{TinyDataFrame}``, ``{TinySeries}``) as Sacred tags them. tinydb, hashfs,
numpy and pandas are imported only when used.

Records read for people (``TinyDbObserver.runs``, ``TinyDbReader``) give file references as
:class:`TinyFile`, a binary file as Sacred gives them, opened at its first use; the observer's
own writes read them as :class:`TinyFileRef` (hash ids), so a beat creates no file objects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from typing import Any

from prefect_sacred.observers.files import write_atomic
from prefect_sacred.serialization import flatten, marked_repr

__all__ = [
    "FINISHED",
    "INSTALL_HINT",
    "TinyFile",
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
# HashFS's layout, as Sacred configures it: three levels of two characters, md5 ids.
HASHFS_DEPTH = 3
HASHFS_WIDTH = 2
_HASH_ID = re.compile(r"[0-9a-fA-F]+")


def require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"TinyDbObserver needs {module}: {INSTALL_HINT}") from None


class TinyFileRef(str):
    """The md5 id of a file in ``hashfs/``: written as ``{TinyFile}:"<id>"``."""


class _OpenedLater(io.RawIOBase):
    """The raw file under a :class:`TinyFile`: the HashFS file, opened at the first read."""

    mode = "rb"

    def __init__(self, file_id: str, hashfs_root: str) -> None:
        super().__init__()
        self.file_id = file_id
        self.hashfs_root = hashfs_root
        self._file: io.FileIO | None = None

    @property
    def name(self) -> str:
        if self._file is not None:
            return str(self._file.name)
        return hashfs_path(self.hashfs_root, self.file_id)

    def _opened(self) -> io.FileIO:
        if self._file is None:
            if self.closed:
                raise ValueError("I/O operation on closed file.")
            path = find_in_hashfs(self.hashfs_root, self.file_id)
            if path is None:
                raise FileNotFoundError(f"no file {self.file_id!r} in {self.hashfs_root}")
            self._file = io.FileIO(path, "r")
        return self._file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        return self._opened().readinto(buffer)

    def readall(self) -> bytes:
        return self._opened().readall()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._opened().seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell() if self._file is not None else 0

    def fileno(self) -> int:
        return self._opened().fileno()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


class TinyFile(io.BufferedReader):
    """A file in ``hashfs/`` as Sacred's TinyDB records give it: a binary file (``.read()``,
    ``.name``, ``.hash`` the md5 id), opened only at its first use, so reading records opens and
    reads nothing. As in Sacred, closing one is the caller's (``with record[...] as handle``).
    Copies are files of their own on the same content.
    """

    def __init__(self, file_id: str, hashfs_root: str) -> None:
        super().__init__(_OpenedLater(file_id, hashfs_root))
        #: The md5 id of the file (Sacred's attribute).
        self.hash = str(file_id)
        self.hashfs_root = hashfs_root

    def exists(self) -> bool:
        """Whether the file is in ``hashfs/``."""
        return find_in_hashfs(self.hashfs_root, self.hash) is not None

    def __copy__(self) -> TinyFile:
        return TinyFile(self.hash, self.hashfs_root)

    def __deepcopy__(self, memo: dict[int, Any]) -> TinyFile:
        return TinyFile(self.hash, self.hashfs_root)


def hashfs_path(hashfs_root: str, file_id: str) -> str:
    """Where HashFS keeps the file ``file_id`` (without an extension)."""
    cut = HASHFS_DEPTH * HASHFS_WIDTH
    parts = [file_id[i : i + HASHFS_WIDTH] for i in range(0, cut, HASHFS_WIDTH)] + [file_id[cut:]]
    return os.path.join(hashfs_root, *[part for part in parts if part])


def find_in_hashfs(hashfs_root: str, file_id: str) -> str | None:
    """The path of file ``file_id`` in HashFS (also stored with an extension), None if absent.

    Only hash ids are looked up: a reference that is a path never leaves ``hashfs_root``.
    """
    if not _HASH_ID.fullmatch(file_id):
        return None
    path = hashfs_path(hashfs_root, file_id)
    if os.path.isfile(path):
        return path
    directory, prefix = os.path.split(path)
    try:
        names = sorted(name for name in os.listdir(directory) if name.startswith(prefix + os.extsep))
    except OSError:
        return None
    return os.path.join(directory, names[0]) if names else None


def encode_value(value: Any, _open: set[int] | None = None) -> Any:
    """Turn a record into what ``metadata.json`` holds (Sacred's tags for dates and files).

    A value that cannot be encoded (a circular reference, an object whose encoding raises)
    becomes a marked repr in its place (see :mod:`prefect_sacred.serialization`): one bad value
    never fails the write of the whole database.
    """
    if isinstance(value, TinyFileRef):
        return _FILE + json.dumps(str(value))
    if isinstance(value, TinyFile):
        return _FILE + json.dumps(value.hash)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dt.datetime):
        return _DATE + value.strftime(_DATE_FORMAT)
    if isinstance(value, (dict, list, tuple)):
        containers = set() if _open is None else _open  # those being encoded around this one
        if id(value) in containers:
            return marked_repr(value, "a circular reference")
        containers.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    str(key) if not isinstance(key, str) else key: encode_value(item, containers)
                    for key, item in value.items()
                }
            return [encode_value(item, containers) for item in value]
        finally:
            containers.discard(id(value))
    try:
        return _encode_object(value)
    except Exception as exc:
        return marked_repr(value, exc)


def _encode_object(value: Any) -> Any:
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


def decode_value(value: Any, file: Callable[[TinyFileRef], Any] | None = None) -> Any:
    """The inverse of :func:`encode_value`.

    Files become :class:`TinyFileRef` (hash ids), or ``file(ref)`` when ``file`` is given
    (:class:`TinyFile` for records read for people).
    """
    if isinstance(value, str):
        if value.startswith(_DATE):
            return dt.datetime.strptime(value[len(_DATE) :], _DATE_FORMAT)
        if value.startswith(_FILE):
            ref = TinyFileRef(json.loads(value[len(_FILE) :]))
            return file(ref) if file is not None else ref
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
        return {key: decode_value(item, file) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item, file) for item in value]
    return value


class TinyJsonStorage:
    """A TinyDB storage: the JSON file with Sacred's tags, re-read on every access and
    replaced atomically on every write (callers hold the directory lock around writes).

    Args:
        path: The JSON file (``metadata.json``).
        hashfs_root: When given, file references read back as :class:`TinyFile` on this HashFS
            directory; otherwise as :class:`TinyFileRef`. Both are written back as references.
    """

    def __init__(self, path: str, hashfs_root: str | None = None, **_: Any) -> None:
        self.path = path
        self.hashfs_root = hashfs_root

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The whole database, decoded; None when the file is missing or empty."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        root = self.hashfs_root
        file = None if root is None else (lambda ref: TinyFile(ref, root))
        decoded: dict[str, dict[str, Any]] = decode_value(json.loads(text), file)
        return decoded

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Encode ``data`` and replace the file with it atomically."""
        # Key order is kept: TinyDB lists documents in file order, the order runs were created.
        text = json.dumps(encode_value(data), indent=1)
        write_atomic(self.path, text, durable=True)

    def close(self) -> None:
        """Nothing stays open between accesses."""


def open_db_and_fs(root: str, files: bool = False) -> tuple[Any, Any]:
    """TinyDB on ``root/metadata.json`` and HashFS on ``root/hashfs`` (created if missing).

    With ``files``, the database gives file references as :class:`TinyFile` (Sacred's open
    files), else as :class:`TinyFileRef`.
    """
    tinydb = require("tinydb")
    hashfs = require("hashfs")
    os.makedirs(root, exist_ok=True)
    hashfs_root = os.path.join(root, "hashfs")
    db = tinydb.TinyDB(
        os.path.join(root, "metadata.json"),
        storage=_storage_class(),
        hashfs_root=hashfs_root if files else None,
    )
    fs = hashfs.HashFS(hashfs_root, depth=HASHFS_DEPTH, width=HASHFS_WIDTH, algorithm="md5")
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
