"""MongoObserver: Sacred's MongoDB format, readable by Omniboard and Incense, safe under load.

The ``runs`` document, the ``metrics`` collection and GridFS are written exactly as Sacred
0.8.7 writes them (``format: "MongoObserver-0.7.0"``, naive-UTC dates, ``$set`` updates so
fields other tools add survive), with these differences, each in the module named:

* numeric ids are claimed atomically, and string ids never break the next automatic one; an
  unreachable server fails the start within ``serverSelectionTimeoutMS`` (default 5 s)
  (``mongo_connect``);
* sources and resources are uploaded once and found again by md5 (``mongo_files``);
* the ``runs`` document stays below 16 MB: past ``captured_out_limit`` characters it keeps the
  most recent output and GridFS all of it (``mongo_output``); ``info``, ``result`` and
  ``config`` past ``value_limit`` go to GridFS (``mongo_files``); metrics are chunked and keys
  MongoDB rejects (a leading ``$``, ``.``) renamed before writing (``mongo_storage``);
* nothing that failed is forgotten: heartbeats, metric points, artifacts and resources that
  could not be written go out with the next write, and the final write retries for
  ``final_save_timeout`` seconds, then saves the run to a JSON file and says where
  (``mongo_failures``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.mongo_connect import (
    RESERVED_COLLECTIONS,
    check_reachable,
    collection_names,
    create_indexes,
    find_run_id,
    insert_with_id,
    insert_with_next_id,
    load_pymongo,
    make_client,
    server_address,
)
from prefect_sacred.observers.mongo_failures import (
    DEFAULT_FAILURE_DIR,
    MongoWriteError,
    cap_trace,
    write_failure_file,
)
from prefect_sacred.observers.mongo_files import RunFiles, save_sources
from prefect_sacred.observers.mongo_output import CapturedOutput
from prefect_sacred.observers.mongo_storage import MetricWriter, sanitize, with_metric_refs
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import redact

__all__ = ["DEFAULT_FAILURE_DIR", "MongoObserver", "MongoWriteError"]

logger = logging.getLogger("prefect_sacred.mongo")

DEFAULT_MONGO_PRIORITY = 30
# The fields a reattached observer takes over from the stored document (the rest is other tools').
_OWN_FIELDS = (
    "_id",
    "experiment",
    "format",
    "command",
    "host",
    "start_time",
    "config",
    "meta",
    "status",
    "resources",
    "artifacts",
    "captured_out",
    "captured_out_file",
    "info",
    "heartbeat",
    "result",
    "stop_time",
    "fail_trace",
)
_UNFINISHED = {"RUNNING", "QUEUED"}
MiB = 1024 * 1024


class MongoObserver(RunObserver):
    """Records each run in a MongoDB database, in Sacred's format.

    Args:
        url: A ``mongodb://`` or ``mongodb+srv://`` URI, or ``host:port`` (default: localhost).
        db_name: The database holding the collections.
        collection: Sacred's deprecated way to name the runs collection (metrics then go to
            ``metrics``); prefer ``collection_prefix``.
        collection_prefix: ``p`` stores runs in ``p_runs`` and metrics in ``p_metrics``.
        overwrite: The ``_id`` of an existing run to record this run into.
        priority: Observers are called in descending priority; the first id returned wins.
        client: A ready ``pymongo.MongoClient`` (instead of ``url`` and client arguments).
        failure_dir: Where a run is saved when its final write fails (default
            ``~/.prefect_sacred/mongo_failures``).
        captured_out_limit: Characters of output kept in the runs document; beyond it the
            document keeps the most recent ones and GridFS the whole output.
        value_limit: Bytes of ``info``, ``result`` or ``config`` stored in the document; a
            larger value goes to GridFS and the document keeps a reference.
        metrics_chunk_points: Points per metric document before older points move to chunks.
        final_save_timeout: Seconds the final write keeps retrying before saving to a file.
        **client_kwargs: Passed to ``pymongo.MongoClient`` (TLS files, ``authMechanism``, ...).
            ``serverSelectionTimeoutMS`` defaults to 5000: how long an unreachable server may
            delay the start.
    """

    VERSION = "MongoObserver-0.7.0"
    COLLECTION_NAME_BLACKLIST = RESERVED_COLLECTIONS

    def __init__(
        self,
        url: str | None = None,
        db_name: str = "sacred",
        collection: str = "runs",
        collection_prefix: str = "",
        overwrite: int | str | None = None,
        priority: int = DEFAULT_MONGO_PRIORITY,
        client: Any = None,
        failure_dir: str | os.PathLike[str] | None = None,
        *,
        captured_out_limit: int = 256 * 1024,
        value_limit: int = 4 * MiB,
        metrics_chunk_points: int = 100_000,
        final_save_timeout: float = 20.0,
        **client_kwargs: Any,
    ) -> None:
        load_pymongo()
        import gridfs

        if client is not None:
            if url is not None:
                raise ValueError("Cannot pass both a client and a url.")
        else:
            client = make_client(url, client_kwargs)
        self._client = client
        self.url = url
        database = client[db_name]
        runs_name, metrics_name = collection_names(collection, collection_prefix)
        self.initialize(
            database[runs_name],
            gridfs.GridFS(database),
            overwrite=overwrite,
            metrics_collection=database[metrics_name],
            failure_dir=failure_dir,
            priority=priority,
        )
        self.captured_out_limit = captured_out_limit
        self.value_limit = value_limit
        self.metrics_chunk_points = metrics_chunk_points
        self.final_save_timeout = final_save_timeout

    def initialize(
        self,
        runs_collection: Any,
        fs: Any,
        overwrite: int | str | None = None,
        metrics_collection: Any = None,
        failure_dir: str | os.PathLike[str] | None = None,
        priority: int = DEFAULT_MONGO_PRIORITY,
    ) -> None:
        """Sacred's second half of the constructor (``create_from`` calls only this)."""
        self.runs = runs_collection
        self.metrics = metrics_collection
        self.fs = fs
        database = runs_collection.database
        self.metrics_chunks = (
            database[f"{metrics_collection.name}_chunks"] if metrics_collection is not None else None
        )
        self.overwrite = overwrite
        self.priority = priority
        self.failure_dir = str(failure_dir) if failure_dir is not None else None
        self.captured_out_limit = 256 * 1024
        self.value_limit = 4 * MiB
        self.metrics_chunk_points = 100_000
        self.final_save_timeout = 20.0
        self.url = getattr(self, "url", None)
        self._dump_on_final_failure = True
        self._offline = False
        self._last_batch: Any = None
        self._indexed = False
        self._overwritten = False
        self.run_entry: dict[str, Any] = {}
        self._begin(None)

    @classmethod
    def create_from(
        cls,
        runs_collection: Any,
        fs: Any,
        overwrite: int | str | None = None,
        metrics_collection: Any = None,
        failure_dir: str | os.PathLike[str] | None = None,
        priority: int = DEFAULT_MONGO_PRIORITY,
    ) -> MongoObserver:
        """Build an observer on existing collections (e.g. mongomock ones in tests)."""
        self = cls.__new__(cls)
        self.url = None
        self._client = runs_collection.database.client
        self.initialize(runs_collection, fs, overwrite, metrics_collection, failure_dir, priority)
        return self

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> MongoObserver:
        """Sacred's deprecated alias of the constructor."""
        return cls(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MongoObserver) and self.runs == other.runs

    def __hash__(self) -> int:
        return hash((self.runs.database.name, self.runs.name))

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
        if self.overwrite is not None:
            raise RuntimeError("Can't overwrite with QUEUED run.")
        self._begin(_id)
        self._connect()
        self.run_entry = {
            "experiment": save_sources(self.runs.database, self.fs, ex_info),
            "command": command,
            "host": sanitize(dict(host_info)),
            "config": self._fit("config", sanitize(flatten(config))),
            "meta": sanitize({**meta_info, "queue_time": queue_time}),
            "status": "QUEUED",
        }
        return self._insert(_id)

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
        self._begin(_id)
        self._connect()
        if self.overwrite is not None:
            if self._overwritten:
                raise RuntimeError("Cannot overwrite more than once!")
            _id = find_run_id(self.runs, self.overwrite)
            if _id is None:
                raise RuntimeError(f"Couldn't find run to overwrite with _id='{self.overwrite}'")
            self._overwritten = True
            self._begin(_id)
        self.run_entry = {
            "experiment": save_sources(self.runs.database, self.fs, ex_info),
            "format": self.VERSION,
            "command": command,
            "host": sanitize(dict(host_info)),
            "start_time": start_time,
            "config": self._fit("config", sanitize(flatten(config))),
            "meta": sanitize(meta_info),
            "status": "RUNNING",
            "resources": [],
            "artifacts": [],
            "captured_out": "",
            "info": {},
            "heartbeat": None,
        }
        return self._insert(_id)

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        errors = self._retry_pending()
        self._output.update(captured_out)
        if not self._offline:
            try:
                self._output.write()
            except Exception as exc:  # the document still gets the recent output below
                errors.append(exc)
        for key, value in self._output.changed_fields().items():
            self._set(key, value)
        self._set("info", self._info_entry(info))
        self._set("heartbeat", beat_time)
        self._set("result", self._fit("result", sanitize(flatten(result))))
        self._save()
        self._raise_first(errors)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        if self.metrics is None or self._writer is None:
            return
        # A wrapper retrying this call passes the same batch again: add its points only once.
        if metrics_by_name is not self._last_batch:
            self._writer.add(metrics_by_name)
            self._last_batch = metrics_by_name
        if not self._offline:
            self._writer.flush()

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._set("stop_time", stop_time)
        self._set("result", self._fit("result", sanitize(flatten(result))))
        self._set("status", "COMPLETED")
        self._final_save()

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._set("stop_time", interrupt_time)
        self._set("status", status)
        self._final_save()

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._set("stop_time", fail_time)
        self._set("status", "FAILED")
        self._set("fail_trace", cap_trace(list(fail_trace)))
        self._final_save()

    def resource_event(self, filename: str) -> None:
        self._files.add(("resource", filename, filename, None, None))
        self._raise_first(self._retry_pending())

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        self._files.add(("artifact", name, filename, metadata, content_type))
        self._raise_first(self._retry_pending())

    def reattach(self, _id: Any) -> bool:
        self._connect()
        found = find_run_id(self.runs, _id)
        if found is None:
            return False
        doc = self.runs.find_one({"_id": found}) or {}
        if doc.get("status") not in _UNFINISHED:
            return False
        self._begin(found)
        self.run_entry = {key: doc[key] for key in _OWN_FIELDS if key in doc}
        if self._writer is not None:
            self._writer.load_existing()
        # The dead process kept the unfinished GridFS chunk of its output in memory only.
        self._output.resume(doc)
        return True

    def run_location(self) -> str | None:
        if self._id is None:
            return None
        return redact(
            f"{server_address(self.url, self._client)}/{self.runs.database.name}.{self.runs.name}/{self._id}"
        )

    # --- per-run state --------------------------------------------------------------------------

    def _begin(self, _id: Any) -> None:
        """Reset per-run state. New objects, never mutation: a copied observer shares them."""
        self._id = _id
        self.run_entry = {}
        self._dirty: set[str] = set()
        self._files = RunFiles(self.runs.database, self.fs, self.runs.name, _id)
        self._last_batch = None
        self._output = CapturedOutput(self.runs.database, self.runs.name, _id, self.captured_out_limit)
        self._writer: MetricWriter | None = None
        if _id is not None and self.metrics is not None and self.metrics_chunks is not None:
            self._writer = MetricWriter(self.metrics, self.metrics_chunks, _id, self.metrics_chunk_points)

    def _set(self, key: str, value: Any) -> None:
        self.run_entry[key] = value
        self._dirty.add(key)

    # --- writing ------------------------------------------------------------------------------

    def _connect(self) -> None:
        check_reachable(self.runs.database, server_address(self.url, self._client))
        if not self._indexed:
            self._indexed = True
            create_indexes(self.runs.database, self.metrics)

    def _insert(self, _id: Any) -> Any:
        if self._overwritten:
            _id = self.run_entry["_id"] = self._id
            exists = True
        elif _id is None:
            _id, exists = insert_with_next_id(self.runs, self.run_entry), False
        else:
            exists = not insert_with_id(self.runs, self.run_entry, _id)
        if exists:  # the overwritten run, or the queued run now starting: every field is new
            self._dirty.update(self.run_entry)
            self._save()
        self._begin_run(_id)
        return _id

    def _begin_run(self, _id: Any) -> None:
        entry, self._id = self.run_entry, _id
        self._begin(_id)
        self.run_entry = entry
        if self._overwritten and self._writer is not None:
            self._writer.load_existing()

    def _save(self) -> None:
        if not self._dirty or self._offline:
            return
        fields = {key: self.run_entry[key] for key in self._dirty if key in self.run_entry and key != "_id"}
        self.runs.update_one({"_id": self._id}, {"$set": fields})
        self._dirty.clear()

    def _final_save(self) -> None:
        deadline = time.monotonic() + self.final_save_timeout
        while True:
            errors = [] if self._offline else self._retry_pending()
            if self._offline:
                return
            try:
                if self._writer is not None:
                    self._writer.flush()
                self._output.write(final=True)
                self._set("info", self._info_entry(None))
                # Everything, with upsert: the document may have been lost with the server.
                fields = {key: value for key, value in self.run_entry.items() if key != "_id"}
                self.runs.update_one({"_id": self._id}, {"$set": fields}, upsert=True)
                self._dirty.clear()
                self._raise_first(errors)
                return
            except Exception as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if not self._dump_on_final_failure:
                        raise
                    path = self.dump_failure(f"{type(exc).__name__}: {redact(str(exc))[:300]}")
                    message = f"could not write run {self._id} to MongoDB; the run is saved in {path}"
                    logger.error("%s", message)
                    raise MongoWriteError(message) from None
                time.sleep(min(1.0, remaining))

    def _retry_pending(self) -> list[Exception]:
        """Write what is owed from earlier: metric points and files. Returns the errors, if any."""
        errors: list[Exception] = []
        if self._offline:
            return errors
        if self._writer is not None and self._writer.pending:
            try:
                self._writer.flush()
            except Exception as exc:
                errors.append(exc)
        changed, upload_errors = self._files.upload(self.run_entry)
        errors.extend(upload_errors)
        if changed:
            # Uploaded is done even if this save fails: the fields stay dirty for the next one.
            self._dirty.update(changed)
            try:
                self._save()
            except Exception as exc:
                errors.append(exc)
        return errors

    @staticmethod
    def _raise_first(errors: list[Exception]) -> None:
        if errors:
            raise errors[0]

    # --- fields -------------------------------------------------------------------------------

    def _info_entry(self, info: dict[str, Any] | None) -> Any:
        """``flatten(info)`` plus ``info.metrics`` references, kept by us, not in the live dict."""
        if info is None:  # final save: keep what the last beat stored, refresh the references
            stored = self.run_entry.get("info") or {}
        else:
            stored = sanitize(flatten(info)) if info else {}
        stored = with_metric_refs(stored, self._writer.refs if self._writer else {})
        return stored if info is None else self._fit("info", stored, keep=("metrics",))

    def _fit(self, field: str, value: Any, keep: tuple[str, ...] = ()) -> Any:
        """``value``, or a reference to a GridFS copy when it would crowd the 16 MB document."""
        import bson

        size = len(bson.encode({"v": value}))
        if size <= self.value_limit or self._offline:
            return value
        return self._files.spill(field, value, size, keep)

    # --- failures -----------------------------------------------------------------------------

    def dump_failure(self, reason: str) -> str:
        """Save everything this run still owes MongoDB to a JSON file; returns its path."""
        entry = {"_id": self._id, **self.run_entry}  # the file is named after the id
        if self._output.text:
            entry["captured_out"] = self._output.text
        owed_metrics = self._writer.pending if self._writer else {}
        return write_failure_file(
            self.failure_dir, reason, self.runs, self.metrics, entry, owed_metrics, self._files.pending
        )
