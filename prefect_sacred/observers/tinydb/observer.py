"""TinyDbObserver: Sacred's TinyDB layout, safe for several processes sharing one directory.

``BASEDIR/metadata.json`` is a TinyDB database (table ``runs``) and ``BASEDIR/hashfs/`` holds
sources, resources and artifacts by md5 (three levels of two characters), as Sacred writes them
(tags in :mod:`~prefect_sacred.observers.tinydb.storage`), so Sacred's ``TinyDbReader`` reads our
directories and ours (:class:`~prefect_sacred.observers.tinydb.reader.TinyDbReader`) reads
Sacred's. Better than Sacred:

* every read-modify-write of ``metadata.json`` holds an exclusive lock on
  ``BASEDIR/metadata.json.lock`` and re-reads the file, and the file is replaced atomically, so
  runs written by several processes at once are all kept and a crash never truncates it;
* numpy arrays and pandas frames and series in config, info and result are stored and read
  back; numpy scalars are stored as plain numbers; other objects JSON cannot hold are stored as
  jsonpickle data (like the other observers) instead of failing the run;
* queued runs are recorded (``status: QUEUED``) and become RUNNING when they start;
* metrics, which Sacred's TinyDB observer drops, are appended to
  ``BASEDIR/metrics/<run id>.jsonl``
  (:class:`~prefect_sacred.observers.metrics_log.MetricsLog`): one JSON line per metric
  and beat, ``{"name", "steps", "values", "timestamps"}`` (timestamps in ISO format), so a beat
  costs what is new; ``TinyDbReader.fetch_metrics`` merges them;
* captured output costs what is new, however long it is. Every beat rewrites the whole
  ``metadata.json`` (TinyDB has no other way to update a record), so while the run is live the
  record's ``captured_out`` holds the output only up to ``live_output_chars`` (64 K) characters;
  beyond that it holds ``"[N earlier characters are in captured_out/<run id>.txt]\\n"`` and the
  last 64 K characters. The whole output is appended to ``BASEDIR/captured_out/<run id>.txt``:
  a beat appends what the run's :class:`~prefect_sacred.observers.base.OutputDelta` adds to the
  characters stored, and writes the file whole only when the delta does not continue them (or
  without a delta, as Sacred's callers send it). The final event puts the whole output into the
  record and deletes the file, so a finished run's ``metadata.json`` is what Sacred's readers
  expect; our ``TinyDbReader.fetch_metadata`` gives the whole output of a live run (or of one
  whose process died) from the file. Rewriting the record's ``captured_out`` in full on an
  amortised schedule instead would still put the whole output into every beat's rewrite of
  ``metadata.json``: O(output) per beat.

Requires ``pip install 'prefect-sacred[tinydb]'``.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect_sacred.observers.base import OutputDelta, RunObserver
from prefect_sacred.observers.files import OutputFile
from prefect_sacred.observers.metrics_log import MetricsLog
from prefect_sacred.observers.tinydb.storage import FINISHED, TinyFileRef, open_db_and_fs, require, run_file

__all__ = ["TinyDbObserver"]

_HEADER = "[{skipped} earlier characters are in {path}]\n"


class TinyDbObserver(RunObserver):
    """Stores runs in a TinyDB file and their files in a HashFS, in Sacred's layout.

    Args:
        path: The directory for ``metadata.json`` and ``hashfs/`` (created with its parents).
        priority: Observers are called in descending priority; the first id returned wins.
    """

    VERSION = "TinyDbObserver-0.8.7"
    #: Characters of captured output a live run's record holds (the rest is in its output file).
    live_output_chars = 64 * 1024

    # Per run (see _reset): the record's TinyDB id, the run id, the metrics journal and the
    # output file (None before the run started or when it is only queued).
    _doc_id: int | None
    _run_id: Any
    _journal: MetricsLog | None
    _output: OutputFile | None

    def __init__(self, path: str | os.PathLike[str] = "./runs_db", priority: int = 0) -> None:
        require("tinydb")
        require("hashfs")
        self.root = os.path.abspath(path)
        self.priority = priority
        self._db: Any = None
        self._fs: Any = None
        self._plain_db: Any = None
        self._reset(None, None)

    @classmethod
    def create(
        cls, path: str | os.PathLike[str] = "./runs_db", overwrite: Any = None, priority: int = 0
    ) -> TinyDbObserver:
        """Sacred's deprecated alternative constructor (warns as Sacred's does).

        ``overwrite`` is accepted and ignored, as Sacred's TinyDbObserver ignores it.
        """
        warnings.warn(
            "TinyDbObserver.create(...) is deprecated. Please use TinyDbObserver(...) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(path, priority=priority)

    @classmethod
    def create_from(
        cls, db: Any, fs: Any, root: str | os.PathLike[str] | None = None, priority: int = 0
    ) -> TinyDbObserver:
        """An observer on an existing TinyDB and HashFS (Sacred's alternative constructor).

        Args:
            db: The TinyDB holding the ``runs`` table.
            fs: The HashFS for files.
            root: Directory for the lock file, metrics and live output (default: the parent of
                ``fs.root``).
            priority: Observer priority.
        """
        observer = cls.__new__(cls)
        observer.root = os.path.abspath(root or os.path.dirname(os.path.abspath(fs.root)))
        observer.priority = priority
        observer._db, observer._fs, observer._plain_db = db, fs, db
        observer._reset(None, None)
        return observer

    def __eq__(self, other: object) -> bool:
        """Observers writing into the same directory are equal (Sacred compares observers so)."""
        return isinstance(other, TinyDbObserver) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

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
        run_id = self._create(record, _id)
        assert self._output is not None
        self._output.remove()  # a leftover of an earlier run of that id would be appended to
        return run_id

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        output = self._started(self._output)
        try:
            output.update(captured_out, output_delta)
        finally:  # the record is updated all the same; a failed append is caught up next beat
            values = {"info": info, "captured_out": self._shown(captured_out), "heartbeat": beat_time}
            self._save({**values, "result": result})

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        self._started(self._journal).append(metrics_by_name)  # a failed append retries next beat

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._finish({"stop_time": stop_time, "result": result, "status": "COMPLETED"})

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._finish({"stop_time": interrupt_time, "status": status})

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._finish({"stop_time": fail_time, "status": "FAILED", "fail_trace": fail_trace})

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

        def add(record: dict[str, Any]) -> None:
            artifacts = record.setdefault("artifacts", [])
            if [item[:3] for item in artifacts].count(entry[:3]) == 0:  # a retry adds it once
                artifacts.append(entry)

        self._modify(add)

    def reattach(self, _id: Any) -> bool:
        if _id is None:  # a run no storage observer gave an id is not in this one
            return False
        with self._locked() as table:
            found = self._find(table, _id)
        if found is None or found[1].get("status") in FINISHED:
            return False
        self._reset(found[0], found[1]["_id"])
        assert self._output is not None
        # Not read: only the final event follows. Output that comes all the same is written whole.
        self._output.stored = -1
        return True

    def run_location(self) -> str | None:
        if self._run_id is None:
            return None
        return f"{os.path.abspath(os.path.join(self.root, 'metadata.json'))}#run={self._run_id}"

    @staticmethod
    def metrics_path(root: str, run_id: Any) -> str:
        """Where the metrics of run ``run_id`` are appended below ``root``."""
        return run_file(root, "metrics", run_id, ".jsonl")

    @staticmethod
    def captured_out_path(root: str, run_id: Any) -> str:
        """Where the whole captured output of live run ``run_id`` is kept below ``root``."""
        return run_file(root, "captured_out", run_id, ".txt")

    # --- storage ------------------------------------------------------------------------------

    @property
    def runs(self) -> Any:
        """The TinyDB table ``runs`` (the database is opened at first use), records as Sacred's
        observer gives them: sources, resources and artifacts as binary files
        (:class:`~prefect_sacred.observers.tinydb.storage.TinyFile`, opened at their first use;
        closing them is the caller's)."""
        if self._db is None:
            self._db, self._fs = open_db_and_fs(self.root, files=True)
        return self._db.table("runs")

    @property
    def fs(self) -> Any:
        """The HashFS holding sources, resources and artifacts."""
        if self._fs is None:
            self._db, self._fs = open_db_and_fs(self.root, files=True)
        return self._fs

    def _table(self) -> Any:
        """The ``runs`` table the observer writes through: file references stay hash ids, so
        rewriting the file creates no file objects."""
        if self._plain_db is None:
            self._plain_db = open_db_and_fs(self.root)[0]
        return self._plain_db.table("runs")

    def _reset(self, doc_id: int | None, run_id: Any) -> None:
        """Per-run state: fresh objects, since a busy observer is shallow-copied for a new run."""
        self._doc_id = doc_id
        self._run_id = run_id
        self._journal = None if run_id is None else MetricsLog(self.metrics_path(self.root, run_id))
        self._output = None if run_id is None else OutputFile(self.captured_out_path(self.root, run_id))

    def _started(self, part: Any) -> Any:
        if part is None:
            raise RuntimeError("TinyDbObserver received an event before the run started")
        return part

    def _shown(self, captured_out: str) -> str:
        """What the record of a live run shows of ``captured_out``: all of it, or a header
        naming the output file and the last ``live_output_chars`` characters."""
        limit = max(0, self.live_output_chars)
        skipped = len(captured_out) - limit
        if skipped <= 0:
            return captured_out
        path = os.path.relpath(self.captured_out_path(self.root, self._run_id), self.root)
        return _HEADER.format(skipped=skipped, path=path) + captured_out[skipped:]

    def _finish(self, values: dict[str, Any]) -> None:
        """The final event: the whole output goes into the record, then its file is deleted."""
        output = self._output
        whole = output.read() if output is not None else None
        self._save(values if whole is None else {**values, "captured_out": whole})
        if output is not None:
            output.remove()

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The ``runs`` table, re-read, with the directory's write lock held."""
        import fcntl  # here, so that the package imports where fcntl does not exist

        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "metadata.json.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                table = self._table()
                # TinyDB caches query results and the next document id: another process may have
                # written since, so forget both before reading.
                table.clear_cache()
                table._next_id = None
                yield table
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
                if self._db is not None and self._db is not self._plain_db:
                    # .runs is another TinyDB on the same file: what it cached may be stale now.
                    self._db.table("runs").clear_cache()

    @staticmethod
    def _find(table: Any, _id: Any) -> tuple[int, dict[str, Any]] | None:
        for document in table.all():
            if document.get("_id") == _id or (_id is not None and str(document.get("_id")) == str(_id)):
                return document.doc_id, dict(document)
        return None

    def _create(self, record: dict[str, Any], _id: Any) -> Any:
        with self._locked() as table:
            found = self._find(table, _id) if _id is not None else None
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
        self._reset(doc_id, record["_id"])
        return record["_id"]

    def _save(self, values: dict[str, Any]) -> None:
        self._modify(lambda record: record.update(values))

    def _modify(self, change: Callable[[dict[str, Any]], None]) -> None:
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


def _replace_with(record: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def replace(document: dict[str, Any]) -> None:
        document.clear()
        document.update(record)

    return replace
