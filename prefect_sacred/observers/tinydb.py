"""TinyDbObserver: Sacred's TinyDB layout, safe for several processes sharing one directory.

``BASEDIR/metadata.json`` is a TinyDB database (table ``runs``) and ``BASEDIR/hashfs/`` holds
sources, resources and artifacts by md5 (three levels of two characters), as Sacred writes them:
dates are ``"{TinyDate}:2016-11-12T01:18:00.228352"`` and file references
``"{TinyFile}:\\"<md5>\\""``, so Sacred's ``TinyDbReader`` reads our directories and ours
(:class:`~prefect_sacred.observers.tinydb_reader.TinyDbReader`) reads Sacred's. Better than
Sacred:

* every read-modify-write of ``metadata.json`` holds an exclusive lock on
  ``BASEDIR/metadata.json.lock`` and re-reads the file, and the file is replaced atomically, so
  runs written by several processes at once are all kept and a crash never truncates it;
* numpy arrays (``{TinyArray}``) and pandas frames and series (``{TinyDataFrame}``,
  ``{TinySeries}``, Sacred's tags) in config, info and result are stored and read back; numpy
  scalars are stored as plain numbers; other objects JSON cannot hold are stored as jsonpickle
  data (like the other observers) instead of failing the run;
* queued runs are recorded (``status: QUEUED``) and become RUNNING when they start;
* metrics, which Sacred's TinyDB observer drops, are appended to
  ``BASEDIR/metrics/<run id>.jsonl``: one JSON line per metric and beat,
  ``{"name", "steps", "values", "timestamps"}`` (timestamps in ISO format), so a beat costs what
  is new; ``TinyDbReader.fetch_metrics`` merges them.

Requires ``pip install 'prefect-sacred[tinydb]'``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.files import write_atomic
from prefect_sacred.observers.registry import (
    ObserverConfigError,
    register_observer_option,
    register_url_scheme,
)
from prefect_sacred.serialization import flatten, isoformat

__all__ = ["TinyDbObserver", "TinyFileRef", "TinyJsonStorage", "decode_value", "encode_value"]

INSTALL_HINT = "pip install 'prefect-sacred[tinydb]'"
_DATE = "{TinyDate}:"
_FILE = "{TinyFile}:"
_ARRAY = "{TinyArray}:"
_FRAME = "{TinyDataFrame}:"
_SERIES = "{TinySeries}:"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_FINISHED = {"COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT"}


def _require(module: str) -> Any:
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
    tinydb = _require("tinydb")
    hashfs = _require("hashfs")
    os.makedirs(root, exist_ok=True)
    db = tinydb.TinyDB(os.path.join(root, "metadata.json"), storage=_storage_class())
    fs = hashfs.HashFS(os.path.join(root, "hashfs"), depth=3, width=2, algorithm="md5")
    return db, fs


def _storage_class() -> type:
    tinydb = _require("tinydb")
    # TinyDB checks storages against its ABC; register ours without importing tinydb at module load.
    tinydb.storages.Storage.register(TinyJsonStorage)
    return TinyJsonStorage


class TinyDbObserver(RunObserver):
    """Stores runs in a TinyDB file and their files in a HashFS, in Sacred's layout.

    Args:
        path: The directory for ``metadata.json`` and ``hashfs/`` (created with its parents).
        priority: Observers are called in descending priority; the first id returned wins.
    """

    VERSION = "TinyDbObserver-0.8.7"

    def __init__(self, path: str | os.PathLike[str] = "./runs_db", priority: int = 0) -> None:
        _require("tinydb")
        _require("hashfs")
        self.root = os.path.abspath(path)
        self.priority = priority
        self._db: Any = None
        self._fs: Any = None
        self._doc_id: int | None = None
        self._run_id: Any = None
        self._metric_backlog: list[str] = []

    @classmethod
    def create_from(
        cls, db: Any, fs: Any, root: str | os.PathLike[str] | None = None, priority: int = 0
    ) -> TinyDbObserver:
        """An observer on an existing TinyDB and HashFS (Sacred's alternative constructor).

        Args:
            db: The TinyDB holding the ``runs`` table.
            fs: The HashFS for files.
            root: Directory for the lock file and metrics (default: the parent of ``fs.root``).
            priority: Observer priority.
        """
        observer = cls.__new__(cls)
        observer.root = os.path.abspath(root or os.path.dirname(os.path.abspath(fs.root)))
        observer.priority = priority
        observer._db, observer._fs = db, fs
        observer._reset(None)
        return observer

    # --- events -------------------------------------------------------------------------------

    def queued_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        record = {
            "experiment": self._store_sources(ex_info),
            "format": self.VERSION,
            "command": command,
            "host": host_info,
            "config": config,
            "meta": {**meta_info, "queue_time": queue_time},
            "status": "QUEUED",
            "queue_time": queue_time,
        }
        return self._create(record, _id)

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        record = {
            "experiment": self._store_sources(ex_info),
            "format": self.VERSION,
            "command": command,
            "host": host_info,
            "start_time": start_time,
            "config": config,
            "meta": meta_info,
            "status": "RUNNING",
            "resources": [],
            "artifacts": [],
            "captured_out": "",
            "info": {},
            "heartbeat": None,
        }
        return self._create(record, _id)

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        self._save({"info": info, "captured_out": captured_out, "heartbeat": beat_time, "result": result})

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        for name, series in metrics_by_name.items():
            self._metric_backlog.append(
                json.dumps(
                    {
                        "name": name,
                        "steps": list(series["steps"]),
                        "values": list(series["values"]),
                        "timestamps": [isoformat(stamp) for stamp in series["timestamps"]],
                    }
                )
            )
        if not self._metric_backlog:
            return
        path = self.metrics_path(self.root, self._run_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as journal:  # a failed append retries next beat
            journal.write("\n".join(self._metric_backlog) + "\n")
        self._metric_backlog = []

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._save({"stop_time": stop_time, "result": result, "status": "COMPLETED"})

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._save({"stop_time": interrupt_time, "status": status})

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._save({"stop_time": fail_time, "status": "FAILED", "fail_trace": fail_trace})

    def resource_event(self, filename: str) -> None:
        address = self.fs.put(filename)
        entry = [filename, address.id, TinyFileRef(address.id)]

        def add(record: dict[str, Any]) -> None:
            resources = record.setdefault("resources", [])
            if [item[:2] for item in resources].count(entry[:2]) == 0:
                resources.append(entry)

        self._modify(add)

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        address = self.fs.put(filename)
        entry = [name, filename, address.id, TinyFileRef(address.id)]
        self._modify(lambda record: record.setdefault("artifacts", []).append(entry))

    def reattach(self, _id: Any) -> bool:
        with self._locked():
            found = self._find(_id)
        if found is None or found[1].get("status") in _FINISHED:
            return False
        self._reset(found[0])
        self._run_id = _id
        return True

    def run_location(self) -> str | None:
        if self._run_id is None:
            return None
        return f"{os.path.join(self.root, 'metadata.json')}#run={self._run_id}"

    @staticmethod
    def metrics_path(root: str, run_id: Any) -> str:
        """Where the metrics of run ``run_id`` are appended below ``root``."""
        name = str(run_id)
        if not name or name.startswith(".") or any(char in name for char in "/\\\0"):
            name = hashlib.md5(name.encode()).hexdigest()
        return os.path.join(root, "metrics", f"{name}.jsonl")

    # --- storage ------------------------------------------------------------------------------

    @property
    def runs(self) -> Any:
        """The TinyDB table ``runs`` (the database is opened at first use)."""
        if self._db is None:
            self._db, self._fs = open_db_and_fs(self.root)
        return self._db.table("runs")

    @property
    def fs(self) -> Any:
        """The HashFS holding sources, resources and artifacts."""
        if self._fs is None:
            self._db, self._fs = open_db_and_fs(self.root)
        return self._fs

    def _reset(self, doc_id: int | None) -> None:
        """Per-run state: fresh objects, since a busy observer is shallow-copied for a new run."""
        self._doc_id = doc_id
        self._run_id = None
        self._metric_backlog = []

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The ``runs`` table, re-read, with the directory's write lock held."""
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "metadata.json.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                table = self.runs
                # TinyDB caches query results and the next document id: another process may have
                # written since, so forget both before reading.
                table.clear_cache()
                table._next_id = None
                yield table
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _find(self, _id: Any) -> tuple[int, dict[str, Any]] | None:
        for document in self.runs.all():
            if document.get("_id") == _id or (_id is not None and str(document.get("_id")) == str(_id)):
                return document.doc_id, dict(document)
        return None

    def _create(self, record: dict[str, Any], _id: Any) -> Any:
        with self._locked() as table:
            found = self._find(_id) if _id is not None else None
            if found is not None:
                doc_id, existing = found
                if existing.get("status") != "QUEUED" or record["status"] != "RUNNING":
                    raise FileExistsError(f"a run with id {_id!r} already exists in {self.root}")
                record = {
                    **record,
                    "_id": existing["_id"],
                    "queue_time": existing.get("queue_time"),
                }
                if record["queue_time"] is None:
                    del record["queue_time"]
                table.update(_replace_with(record), doc_ids=[doc_id])
            else:
                record = {"_id": _id if _id is not None else uuid.uuid4().hex, **record}
                doc_id = table.insert(record)
        self._reset(doc_id)
        self._run_id = record["_id"]
        return record["_id"]

    def _save(self, values: dict[str, Any]) -> None:
        self._modify(lambda record: record.update(values))

    def _modify(self, change: Any) -> None:
        if self._doc_id is None:
            raise RuntimeError("TinyDbObserver received an event before the run started")
        with self._locked() as table:
            if not table.contains(doc_id=self._doc_id):
                raise RuntimeError(f"run {self._run_id!r} disappeared from {self.root}")
            # In place, so the run keeps its position: readers index runs in the order they ran.
            table.update(change, doc_ids=[self._doc_id])

    def _store_sources(self, ex_info: dict[str, Any]) -> dict[str, Any]:
        ex_info = dict(ex_info)
        sources = []
        for relpath, md5 in ex_info.get("sources", []):
            path = os.path.join(ex_info.get("base_dir", ""), relpath)
            try:
                address = self.fs.put(path)
                sources.append([relpath, md5, TinyFileRef(address.id)])
            except OSError:  # the source moved since the run started: keep name and digest
                sources.append([relpath, md5, None])
        ex_info["sources"] = sources
        return ex_info


def _replace_with(record: dict[str, Any]) -> Any:
    def replace(document: dict[str, Any]) -> None:
        document.clear()
        document.update(record)

    return replace


@register_observer_option("-t", "--tiny_db", "BASEDIR", "Add a TinyDB observer (Sacred's layout).")
def _tinydb_option(value: str) -> TinyDbObserver:
    if not value.strip():
        raise ObserverConfigError("BASEDIR must not be empty")
    try:
        return TinyDbObserver(value)
    except ImportError as exc:
        raise ObserverConfigError(str(exc)) from None


@register_url_scheme("tinydb")
def _tinydb_url(url: str) -> RunObserver:
    """``tinydb://./runs_db`` (relative) or ``tinydb:///abs/path``."""
    path = url[len("tinydb://") :]
    if not path:
        raise ObserverConfigError("tinydb:// URL without a path")
    return _tinydb_option(path)
