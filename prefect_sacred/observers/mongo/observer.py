"""MongoObserver: Sacred's MongoDB format, readable by Omniboard and Incense, safe under load.

The ``runs`` document, the ``metrics`` collection and GridFS are written exactly as Sacred
0.8.7 writes them (``format: "MongoObserver-0.7.0"``, naive-UTC dates, ``$set`` updates so
fields other tools add survive), with these differences, each in the module named:

* numeric ids are claimed atomically, and string ids never break the next automatic one; an
  unreachable server fails the start within ``serverSelectionTimeoutMS`` (default 5 s), and
  a write that gets no reply fails within ``socketTimeoutMS`` (default 30 s) (``connect``);
* sources and resources are uploaded once and found again by md5 (``files``);
* the ``runs`` document stays below 16 MB: past ``captured_out_limit`` characters it keeps the
  most recent output and GridFS all of it (``output``); ``info``, ``result`` and
  ``config`` past ``value_limit`` go to GridFS (``files``); metrics are chunked and keys
  MongoDB rejects (a leading ``$``, ``.``) renamed before writing (``storage``);
* nothing that failed is forgotten: heartbeats, metric points, artifacts and resources that
  could not be written go out with the next write, and the final write retries for
  ``final_save_timeout`` seconds, then saves the run to a JSON file and says where
  (``writing``, ``failures``); a queue that gives up hands its undelivered events to
  :meth:`MongoObserver.save_undelivered`, which saves the run the same way.

A heartbeat costs what is new: the run's ``output_delta`` says what the output gained, and
only that is appended (``output``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

from prefect_sacred.observers.base import OutputDelta, PendingEvent, RunObserver, check_artifact_name
from prefect_sacred.observers.mongo.connect import (
    OWN_FIELDS,
    RESERVED_COLLECTIONS,
    UNFINISHED,
    check_client,
    collection_names,
    find_run_id,
    load_pymongo,
    make_client,
    server_address,
)
from prefect_sacred.observers.mongo.failures import DEFAULT_FAILURE_DIR, MongoWriteError, cap_trace
from prefect_sacred.observers.mongo.files import save_sources
from prefect_sacred.observers.mongo.storage import sanitize
from prefect_sacred.observers.mongo.writing import RunWriting
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import redact

__all__ = ["DEFAULT_FAILURE_DIR", "MongoObserver", "MongoWriteError"]

logger = logging.getLogger("prefect_sacred.mongo")

DEFAULT_MONGO_PRIORITY = 30
MiB = 1024 * 1024


class MongoObserver(RunWriting, RunObserver):
    """Records each run in a MongoDB database, in Sacred's format.

    Args:
        url: A ``mongodb://`` or ``mongodb+srv://`` URI, or ``host:port`` (default: localhost).
        db_name: The database holding the collections.
        collection: Sacred's deprecated way to name the runs collection (metrics then go to
            ``metrics``); prefer ``collection_prefix``.
        collection_prefix: ``p`` stores runs in ``p_runs`` and metrics in ``p_metrics``.
        overwrite: The ``_id`` of an existing run to record this run into.
        priority: Observers are called in descending priority; the first id returned wins.
        client: A ready ``pymongo.MongoClient`` (instead of ``url`` and client arguments), or
            mongomock's ``MongoClient`` in tests.
        failure_dir: Where a run is saved when its final write fails (default
            ``~/.prefect_sacred/mongo_failures``).
        captured_out_limit: Characters of output kept in the runs document; beyond it the
            document keeps the most recent ones and GridFS the whole output.
        value_limit: Bytes of ``info``, ``result`` or ``config`` stored in the document; a
            larger value goes to GridFS and the document keeps a reference.
        metrics_chunk_points: Points per metric document before older points move to chunks.
        final_save_timeout: Seconds the final write keeps retrying before saving to a file.
        save_on_final_failure: When the final write still fails after ``final_save_timeout``,
            save the run to a file in ``failure_dir`` and raise :class:`MongoWriteError` naming
            it (the default). ``False`` raises the write's own error and saves nothing: for a
            wrapper that retries the final event and, when it gives up, saves the run through
            :meth:`save_undelivered` (``QueuedMongoObserver``).
        **client_kwargs: Passed to ``pymongo.MongoClient`` (TLS files, ``authMechanism``, ...).
            Timeouts, unless these or the URL's options set them: ``serverSelectionTimeoutMS``
            5000 (how long an unreachable or silent server may delay the start),
            ``connectTimeoutMS`` 5000, ``socketTimeoutMS`` 30000 (how long a write waits for
            the reply; GridFS too). pymongo's own defaults would let a server that accepts
            connections and never answers hang a write forever.
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
        save_on_final_failure: bool = True,
        **client_kwargs: Any,
    ) -> None:
        load_pymongo()
        import gridfs

        # How to connect again: a pickle (serve, the run's journal) holds this, not the client.
        self._init_args: dict[str, Any] | None = None
        if client is None:
            self._init_args = {
                "url": url,
                "db_name": db_name,
                "collection": collection,
                "collection_prefix": collection_prefix,
                "overwrite": overwrite,
                "priority": priority,
                "failure_dir": failure_dir,
                "captured_out_limit": captured_out_limit,
                "value_limit": value_limit,
                "metrics_chunk_points": metrics_chunk_points,
                "final_save_timeout": final_save_timeout,
                "save_on_final_failure": save_on_final_failure,
                **client_kwargs,
            }
        if client is not None:
            check_client(client)
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
        self.save_on_final_failure = save_on_final_failure

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
        self.save_on_final_failure = True
        self.url = getattr(self, "url", None)
        self._offline = False
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
        """Sacred's deprecated alias of the constructor (warns as Sacred's does)."""
        warnings.warn(
            "MongoObserver.create(...) is deprecated. Please use MongoObserver(...) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # A client does not pickle: the state is how to connect (only an observer built from a
        # URL can be rebuilt; one given a ready client cannot).
        init_args = getattr(self, "_init_args", None)
        if init_args is None:
            raise TypeError("a MongoObserver given a ready client cannot be pickled; pass its url")
        return dict(init_args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        MongoObserver.__init__(self, **state)

    def __copy__(self) -> MongoObserver:
        # A run that finds this instance busy gets a copy sharing the client (not a new one).
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

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
            "host": sanitize(flatten(dict(host_info))),
            "config": self._fit("config", sanitize(flatten(config))),
            "meta": {**sanitize(flatten(meta_info)), "queue_time": queue_time},
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
            "host": sanitize(flatten(dict(host_info))),
            "start_time": start_time,
            "config": self._fit("config", sanitize(flatten(config))),
            "meta": sanitize(flatten(meta_info)),  # config_updates may hold sets, numpy, dates
            "status": "RUNNING",
            "resources": [],
            "artifacts": [],
            "captured_out": "",
            "info": {},
            "heartbeat": None,
        }
        return self._insert(_id)

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        """Store the beat: the output the delta adds (``captured_out`` whole without one), ``info``,
        the result, and whatever earlier writes still owe."""
        errors = self._retry_pending()
        self._output.update(captured_out, output_delta)
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
        # A string (Sacred's tests, users' code) is one line of the trace, not its characters.
        lines = [fail_trace] if isinstance(fail_trace, str) else list(fail_trace)
        self._set("fail_trace", cap_trace(lines))
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
        """Store ``filename`` in GridFS as ``artifact://<runs>/<id>/<name>``.

        Raises:
            InvalidArtifactName: ``name`` is empty, absolute or has a ``..`` component.
        """
        check_artifact_name(name)
        self._files.add(("artifact", name, filename, metadata, content_type))
        self._raise_first(self._retry_pending())

    def reattach(self, _id: Any) -> bool:
        if _id is None:  # a run no storage observer gave an id is not in this one
            return False
        self._connect()
        found = find_run_id(self.runs, _id)
        if found is None:
            return False
        doc = self.runs.find_one({"_id": found}) or {}
        if doc.get("status") not in UNFINISHED:
            return False
        self._begin(found)
        self.run_entry = {key: doc[key] for key in OWN_FIELDS if key in doc}
        if self._writer is not None:
            self._writer.load_existing()
        # The dead process kept the unfinished GridFS chunk of its output in memory only.
        self._output.resume(doc)
        return True

    def stored_point_counts(self) -> dict[str, int] | None:
        """How many points of each metric the ``metrics`` documents hold for the current run.

        Exact after ``reattach`` (read from the documents then) and after writes that returned.
        """
        writer = self._writer
        if writer is None:
            return None
        return {
            name: writer.archived.get(name, 0) * writer.chunk_points + count
            for name, count in writer.counts.items()
        }

    def run_location(self) -> str | None:
        if self._id is None:
            return None
        return redact(
            f"{server_address(self.url, self._client)}/{self.runs.database.name}.{self.runs.name}/{self._id}"
        )

    def save_undelivered(self, events: Sequence[PendingEvent], reason: str) -> str:
        """Apply ``events`` to the run without writing to MongoDB, then save the run to a file.

        A queue that gave up on MongoDB calls it after its worker stopped. The events (the final
        one included) change the run in memory only, so the file (as :meth:`dump_failure`
        writes it) holds the runs document as it would have been stored, with its final status
        and the whole output, and the metric points and files not written yet.

        Returns:
            The path of the file.
        """
        with self._writes_held():
            for event in events:
                try:
                    if getattr(event.method, "__self__", self) is self:
                        event.deliver()
                    else:  # an event bound to another object: apply it here, still without writing
                        getattr(self, event.name)(*event.args, **event.kwargs)
                except Exception:
                    logger.warning("could not apply %s to the saved run", event.name, exc_info=True)
        return self.dump_failure(reason)
