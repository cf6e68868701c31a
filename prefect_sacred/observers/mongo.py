"""MongoObserver: Sacred's MongoDB format, readable by Omniboard and Incense, safe under load.

The ``runs`` document, the ``metrics`` collection and GridFS are written exactly as Sacred
0.8.7 writes them (``format: "MongoObserver-0.7.0"``, naive-UTC dates, ``$set`` updates so
fields other tools add survive), with these differences:

* numeric ids are claimed atomically by inserting ``max(numeric _id) + 1`` and retrying on a
  duplicate key, so concurrent starts never share an id and string ids (``--id abc``) never
  break the next automatic one;
* sources and resources are uploaded once and found again by md5 (``fs.files.md5``), across
  runs and paths;
* the ``runs`` document stays below 16 MB: past ``captured_out_limit`` characters the document
  keeps the most recent output and the whole output grows in the GridFS file named in
  ``captured_out_file``; ``info``, ``result`` and ``config`` larger than their limits are stored
  in GridFS and replaced by a reference; metrics are chunked (see ``mongo_storage``);
* keys MongoDB rejects (a leading ``$``, ``.``) are renamed before writing, as Sacred renames
  them only after a failure;
* an unreachable server fails the start within ``serverSelectionTimeoutMS`` (default 5 s);
* nothing that failed is forgotten: heartbeats, metric points, artifacts and resources that
  could not be written go out with the next write, and the final write retries for
  ``final_save_timeout`` seconds, then saves the run to a JSON file and says where.
"""

from __future__ import annotations

import datetime as dt
import logging
import mimetypes
import os
import re
import tempfile
import time
from typing import Any

from prefect_sacred.flows.info import md5_of_file
from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.mongo_storage import AppendOnlyGridFile, MetricWriter, sanitize
from prefect_sacred.observers.registry import ObserverConfigError, redact
from prefect_sacred.serialization import flatten

__all__ = ["DEFAULT_FAILURE_DIR", "MongoObserver", "MongoWriteError"]

logger = logging.getLogger("prefect_sacred.mongo")

DEFAULT_MONGO_PRIORITY = 30
DEFAULT_FAILURE_DIR = os.path.join(os.path.expanduser("~"), ".prefect_sacred", "mongo_failures")
INSTALL_HINT = "pip install 'prefect-sacred[mongo]'"
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


class MongoWriteError(ConnectionError):
    """MongoDB could not record the end of a run; the message names the file holding it."""


def _pymongo() -> Any:
    try:
        import gridfs  # noqa: F401  (part of pymongo; checked here so the hint covers both)
        import pymongo
    except ImportError:
        raise ObserverConfigError(f"the MongoDB observer needs pymongo: {INSTALL_HINT}") from None
    return pymongo


def _has_option(url: str | None, option: str) -> bool:
    return bool(url) and re.search(rf"[?&]{option}=", str(url), re.IGNORECASE) is not None


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
    COLLECTION_NAME_BLACKLIST = {
        "fs.files",
        "fs.chunks",
        "_properties",
        "system.indexes",
        "search_space",
        "search_spaces",
    }

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
        pymongo = _pymongo()
        import gridfs

        if client is not None:
            if url is not None:
                raise ValueError("Cannot pass both a client and a url.")
        else:
            if not _has_option(url, "serverSelectionTimeoutMS") and not any(
                key.lower() == "serverselectiontimeoutms" for key in client_kwargs
            ):
                client_kwargs["serverSelectionTimeoutMS"] = 5000
            # connect=False: no background connection (and no SRV lookup) until the first write.
            client_kwargs.setdefault("connect", False)
            try:
                client = pymongo.MongoClient(url, **client_kwargs)
            except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
                raise ObserverConfigError(
                    f"invalid MongoDB connection {redact(str(url))!r}: {redact(str(exc))}"
                ) from None
        self._client = client
        self.url = url
        database = client[db_name]
        if collection != "runs":
            if collection_prefix:
                raise ValueError("Cannot pass both collection and a collection prefix.")
            runs_name, metrics_name = collection, "metrics"
        else:
            prefix = f"{collection_prefix}_" if collection_prefix else ""
            runs_name, metrics_name = f"{prefix}runs", f"{prefix}metrics"
        for name in (runs_name, metrics_name):
            if name in self.COLLECTION_NAME_BLACKLIST:
                raise KeyError(f'Collection name "{name}" is reserved. Please use a different one.')
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
            "experiment": self._save_sources(ex_info),
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
        entry: dict[str, Any] = {}
        if self.overwrite is not None:
            if self._overwritten:
                raise RuntimeError("Cannot overwrite more than once!")
            _id = self._existing_id(self.overwrite)
            if _id is None:
                raise RuntimeError(f"Couldn't find run to overwrite with _id='{self.overwrite}'")
            self._overwritten = True
            self._begin(_id)
        entry.update(
            {
                "experiment": self._save_sources(ex_info),
                "format": self.VERSION,
                "command": command,
                "host": sanitize(dict(host_info)),
                "start_time": start_time,
                "config": None,
                "meta": sanitize(meta_info),
                "status": "RUNNING",
                "resources": [],
                "artifacts": [],
                "captured_out": "",
                "info": {},
                "heartbeat": None,
            }
        )
        self.run_entry = entry
        entry["config"] = self._fit("config", sanitize(flatten(config)))
        return self._insert(_id)

    def heartbeat_event(
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        errors = self._retry_pending()
        try:
            self._set_captured_out(captured_out)
        except Exception as exc:  # the document still gets the recent output below
            errors.append(exc)
        self._set("info", self._info_entry(info))
        self._set("heartbeat", beat_time)
        self._set("result", self._fit("result", sanitize(flatten(result))))
        self._save()
        if errors:
            raise errors[0]

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
        self._set("fail_trace", _cap_trace(list(fail_trace)))
        self._final_save()

    def resource_event(self, filename: str) -> None:
        self._queue_file(("resource", filename, filename, None, None))
        self._raise_first(self._retry_pending())

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        self._queue_file(("artifact", name, filename, metadata, content_type))
        self._raise_first(self._retry_pending())

    def reattach(self, _id: Any) -> bool:
        self._connect()
        found = self._existing_id(_id)
        if found is None:
            return False
        doc = self.runs.find_one({"_id": found}) or {}
        if doc.get("status") not in _UNFINISHED:
            return False
        self._begin(found)
        self.run_entry = {key: doc[key] for key in _OWN_FIELDS if key in doc}
        if self._writer is not None:
            self._writer.load_existing()
        return True

    def run_location(self) -> str | None:
        if self._id is None:
            return None
        return redact(f"{self._server_address()}/{self.runs.database.name}.{self.runs.name}/{self._id}")

    # --- per-run state --------------------------------------------------------------------------

    def _begin(self, _id: Any) -> None:
        """Reset per-run state. New objects, never mutation: a copied observer shares them."""
        self._id = _id
        self.run_entry = {}
        self._dirty: set[str] = set()
        self._pending_files: list[tuple[str, str, str, Any, Any]] = []
        self._last_batch = None
        self._metric_refs_written: list[dict[str, str]] = []
        self._cout_file: AppendOnlyGridFile | None = None
        self._cout_written = 0
        self._cout_check = ""
        self._last_cout = ""
        self._spilled: dict[str, Any] = {}
        self._writer: MetricWriter | None = None
        if _id is not None and self.metrics is not None and self.metrics_chunks is not None:
            self._writer = MetricWriter(self.metrics, self.metrics_chunks, _id, self.metrics_chunk_points)

    def _set(self, key: str, value: Any) -> None:
        self.run_entry[key] = value
        self._dirty.add(key)

    # --- writing ------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Fail fast, with the server named and no password, when MongoDB cannot be reached."""
        pymongo = _pymongo()
        try:
            self.runs.database.command("ping")
        except pymongo.errors.PyMongoError as exc:
            raise ConnectionError(
                f"cannot reach MongoDB at {redact(self._server_address())}: {redact(str(exc))[:500]}"
            ) from None
        except AttributeError:  # a mongomock database has no command(): nothing to reach
            pass
        if not self._indexed:
            self._indexed = True
            try:  # Sacred creates no indexes; these make the lookups we do cheap.
                if self.metrics is not None:
                    self.metrics.create_index([("run_id", 1), ("name", 1)])
                self.runs.database["fs.files"].create_index([("md5", 1)])
            except Exception as exc:  # read-only users, or servers that refuse: not fatal
                logger.debug("could not create indexes: %s", exc)

    def _insert(self, _id: Any) -> Any:
        from pymongo.errors import DuplicateKeyError

        if self._overwritten:
            self.run_entry["_id"] = self._id
            self._dirty.update(self.run_entry)
            self._save()
            self._begin_run(self._id)
            return self._id
        if _id is not None:
            self.run_entry["_id"] = _id
            try:
                self.runs.insert_one(self.run_entry)
            except DuplicateKeyError:
                existing = self.runs.find_one({"_id": _id}, {"status": 1, "meta": 1}) or {}
                if existing.get("status") != "QUEUED" or self.run_entry["status"] == "QUEUED":
                    raise FileExistsError(
                        f"a run with _id {_id!r} already exists in {self.runs.name}"
                    ) from None
                # The queued run starts: it keeps its id and its queue time.
                queue_time = (existing.get("meta") or {}).get("queue_time")
                if queue_time is not None:
                    self.run_entry["meta"] = {**self.run_entry["meta"], "queue_time": queue_time}
                self._dirty.update(self.run_entry)
                self._save()
            self._begin_run(_id)
            return _id
        for _ in range(10_000):
            last = list(self.runs.find({"_id": {"$type": "number"}}, {"_id": 1}).sort("_id", -1).limit(1))
            candidate = int(last[0]["_id"]) + 1 if last else 1
            self.run_entry["_id"] = candidate
            try:
                self.runs.insert_one(self.run_entry)
            except DuplicateKeyError:  # another run took this id first: take the next one
                continue
            self._begin_run(candidate)
            return candidate
        raise RuntimeError(f"could not claim a run id in {self.runs.name}")

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
        """Write what failed earlier: metric points and files. Returns the errors, if any."""
        errors: list[Exception] = []
        if self._offline:
            return errors
        if self._writer is not None and self._writer.pending:
            try:
                self._writer.flush()
            except Exception as exc:
                errors.append(exc)
        for item in list(self._pending_files):
            try:
                self._store_file(*item)
            except Exception as exc:
                errors.append(exc)
                continue
            self._pending_files.remove(item)
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
        refs = [
            {"name": name, "id": ref} for name, ref in (self._writer.refs if self._writer else {}).items()
        ]
        if refs:
            own: list[Any] = stored["metrics"] if isinstance(stored.get("metrics"), list) else []
            known = {ref["id"] for ref in refs}
            stored = {
                **stored,
                "metrics": [m for m in own if not (isinstance(m, dict) and m.get("id") in known)] + refs,
            }
        if info is None:
            return stored
        return self._fit("info", stored, keep=("metrics",))

    def _fit(self, field: str, value: Any, keep: tuple[str, ...] = ()) -> Any:
        """``value``, or a reference to a GridFS copy when it would crowd the 16 MB document."""
        import bson

        size = len(bson.encode({"v": value}))
        if size <= self.value_limit or self._offline:
            return value
        from bson import json_util

        data = json_util.dumps(value).encode()
        filename = f"{field}://{self.runs.name}/{self._id}"
        file_id = self.fs.put(data, filename=filename, content_type="application/json")
        previous = self._spilled.get(field)
        self._spilled[field] = file_id
        if previous is not None:
            try:
                self.fs.delete(previous)
            except Exception:  # a stale copy is harmless; the reference names the new one
                pass
        reference: dict[str, Any] = {"spilled_to_gridfs": filename, "file_id": file_id, "bytes": size}
        if isinstance(value, dict):
            reference.update({key: value[key] for key in keep if key in value})
        logger.info("%s of run %s is %d bytes: stored in GridFS as %s", field, self._id, size, filename)
        return reference

    def _set_captured_out(self, captured_out: str) -> None:
        self._last_cout = captured_out
        limit = self.captured_out_limit
        if self._cout_file is None and len(captured_out) <= limit:
            if self.run_entry.get("captured_out") != captured_out:
                self._set("captured_out", captured_out)
            return
        if self._offline:
            return
        if self._cout_file is None:
            self._cout_file = AppendOnlyGridFile(
                self.runs.database,
                f"captured_out://{self.runs.name}/{self._id}",
                metadata={"run_id": self._id},
            )
        continues = (
            len(captured_out) >= self._cout_written
            and captured_out[self._cout_written - len(self._cout_check) : self._cout_written]
            == self._cout_check
        )
        if not continues:  # a captured_out_filter rewrote earlier output: store it anew
            self._cout_file.delete()
            self._cout_written, self._cout_check = 0, ""
        self._set(
            "captured_out",
            (
                f"[{len(captured_out) - limit} earlier characters are in GridFS file "
                f"captured_out://{self.runs.name}/{self._id}]\n" + captured_out[-limit:]
            ),
        )
        new = captured_out[self._cout_written :]
        self._cout_file.append(new.encode("utf-8", errors="replace"))
        self._cout_written = len(captured_out)
        self._cout_check = captured_out[-4096:]
        if self.run_entry.get("captured_out_file") != self._cout_file.file_id:
            self._set("captured_out_file", self._cout_file.file_id)

    # --- files --------------------------------------------------------------------------------

    def _queue_file(self, item: tuple[str, str, str, Any, Any]) -> None:
        if item not in self._pending_files:
            self._pending_files.append(item)

    def _store_file(self, kind: str, name: str, filename: str, metadata: Any, content_type: Any) -> None:
        if kind == "resource":
            md5 = md5_of_file(filename)
            self._put_once(filename, md5)
            entry = [filename, md5]
            if entry not in self.run_entry.setdefault("resources", []):
                self.run_entry["resources"].append(entry)
                self._dirty.add("resources")
        else:
            if content_type is None:
                content_type = mimetypes.guess_type(filename)[0]
            with open(filename, "rb") as handle:
                file_id = self.fs.put(
                    handle,
                    filename=f"artifact://{self.runs.name}/{self._id}/{name}",
                    metadata=metadata,
                    content_type=content_type,
                )
            self.run_entry.setdefault("artifacts", []).append({"name": name, "file_id": file_id})
            self._dirty.add("artifacts")
        self._save()

    def _put_once(self, path: str, md5: str) -> Any:
        """Upload ``path`` unless a file with this md5 is stored already; its GridFS id."""
        found = self.runs.database["fs.files"].find_one({"md5": md5}, {"_id": 1})
        if found is not None:
            return found["_id"]
        with open(path, "rb") as handle:
            # md5 is written explicitly: pymongo 4 no longer does, which broke Sacred's dedup.
            return self.fs.put(handle, filename=path, md5=md5)

    def _save_sources(self, ex_info: dict[str, Any]) -> dict[str, Any]:
        experiment = sanitize(dict(ex_info))
        base_dir = ex_info.get("base_dir", "")
        sources = []
        for relpath, md5 in ex_info.get("sources", []):
            sources.append([relpath, self._put_once(os.path.join(base_dir, relpath), md5)])
        return {**experiment, "sources": sources}

    # --- failures -----------------------------------------------------------------------------

    def dump_failure(self, reason: str) -> str:
        """Save everything this run still owes MongoDB to a JSON file; returns its path.

        The file (MongoDB extended JSON) holds the runs document with the whole captured
        output, the metric points not written yet and the files not uploaded yet.
        """
        from bson import json_util

        entry = dict(self.run_entry)
        if self._last_cout:
            entry["captured_out"] = self._last_cout
        dump = {
            "reason": reason,
            "database": self.runs.database.name,
            "runs_collection": self.runs.name,
            "metrics_collection": self.metrics.name if self.metrics is not None else None,
            "run": entry,
            "pending_metrics": self._writer.pending if self._writer else {},
            "pending_files": [list(item) for item in self._pending_files],
        }
        directory = self.failure_dir or DEFAULT_FAILURE_DIR
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            directory = tempfile.gettempdir()
        handle, path = tempfile.mkstemp(
            prefix=f"sacred_mongo_fail_{self._id}_", suffix=".json", dir=directory
        )
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json_util.dumps(dump, indent=1))
        return path

    def _server_address(self) -> str:
        url = self.url
        if url and "://" in url:
            scheme, rest = url.split("://", 1)
            hosts = rest.split("/", 1)[0].split("?", 1)[0]
            return f"{scheme}://{hosts}"
        if url:
            return f"mongodb://{url}"
        try:
            seeds = self._client.topology_description.server_descriptions()
            return "mongodb://" + ",".join(f"{host}:{port}" for host, port in seeds)
        except Exception:
            return "mongodb://localhost:27017"

    def _existing_id(self, _id: Any) -> Any:
        """The stored ``_id`` matching ``_id``; ids recorded as text (labels) match numbers too."""
        candidates = [_id]
        if isinstance(_id, str) and re.fullmatch(r"-?\d{1,18}", _id.strip()):
            candidates.append(int(_id))
        for candidate in candidates:
            doc = self.runs.find_one({"_id": candidate}, {"_id": 1})
            if doc is not None:
                return doc["_id"]
        return None


def _cap_trace(trace: list[str], limit: int = MiB) -> list[str]:
    """The trace, without middle lines past ``limit`` characters (the end says what failed)."""
    if sum(len(line) for line in trace) <= limit:
        return trace
    head, size = trace[:3], 0
    tail: list[str] = []
    for line in reversed(trace[3:]):
        if size + len(line) > limit // 2:
            break
        tail.insert(0, line[-limit // 2 :])
        size += len(line)
    return [*head, f"... {len(trace) - len(head) - len(tail)} lines left out ...\n", *tail]
