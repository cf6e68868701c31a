"""How the MongoObserver writes one run: changed fields only, what failed earlier, the final save.

:class:`RunWriting` is the writing half of :class:`~prefect_sacred.observers.mongo.MongoObserver`
(which holds the events). Every event first changes the run in memory (``run_entry``, the
output, the metric points and files owed) and then writes; anything a write could not store
stays owed and goes out with the next one. Kept in memory only, with writes held back, the same
events make the run a file can hold: ``save_undelivered`` applies the events a queue could not
deliver that way, then saves the run whole (:meth:`RunWriting.dump_failure`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prefect_sacred.observers.mongo.connect import (
    check_reachable,
    create_indexes,
    insert_with_id,
    insert_with_next_id,
    server_address,
)
from prefect_sacred.observers.mongo.failures import MongoWriteError, write_failure_file
from prefect_sacred.observers.mongo.files import RunFiles
from prefect_sacred.observers.mongo.output import CapturedOutput
from prefect_sacred.observers.mongo.storage import MetricWriter, sanitize, with_metric_refs
from prefect_sacred.serialization import flatten
from prefect_sacred.utils import redact

__all__ = ["RunWriting"]

logger = logging.getLogger("prefect_sacred.mongo")


class RunWriting:
    """Writing one run's document, metrics and files; the state of the run being written.

    Per-run state lives in attributes :meth:`_begin` assigns afresh (a copied observer shares
    nothing of it). With writes held (:meth:`_writes_held`), events change that state only.
    """

    # Set by MongoObserver.initialize.
    runs: Any
    metrics: Any
    metrics_chunks: Any
    fs: Any
    url: str | None
    _client: Any
    failure_dir: str | None
    captured_out_limit: int
    value_limit: int
    metrics_chunk_points: int
    final_save_timeout: float
    save_on_final_failure: bool
    _indexed: bool
    _overwritten: bool
    _offline: bool

    # --- per-run state --------------------------------------------------------------------------

    def _begin(self, _id: Any) -> None:
        """Reset per-run state. New objects, never mutation: a copied observer shares them."""
        self._id = _id
        self.run_entry: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._files = RunFiles(self.runs.database, self.fs, self.runs.name, _id)
        self._last_batch: Any = None
        self._output = CapturedOutput(self.runs.database, self.runs.name, _id, self.captured_out_limit)
        self._writer: MetricWriter | None = None
        if _id is not None and self.metrics is not None and self.metrics_chunks is not None:
            self._writer = MetricWriter(self.metrics, self.metrics_chunks, _id, self.metrics_chunk_points)

    def _set(self, key: str, value: Any) -> None:
        self.run_entry[key] = value
        self._dirty.add(key)

    @contextlib.contextmanager
    def _writes_held(self) -> Iterator[None]:
        """Events inside change the run in memory only: nothing is sent to MongoDB."""
        self._offline = True
        try:
            yield
        finally:
            self._offline = False

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
        """Write the whole run, retrying for ``final_save_timeout`` s; then save it to a file.

        Raises:
            MongoWriteError: The run could not be written; the message names the file.
        """
        deadline = time.monotonic() + self.final_save_timeout
        while not self._offline:
            errors = self._retry_pending()
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
                    if not self.save_on_final_failure:
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
        """Save everything this run still owes MongoDB to a JSON file; returns its path.

        The file (MongoDB extended JSON, see ``failures.write_failure_file``) holds the runs
        document as the observer would have written it, with the whole captured output, plus the
        metric points and files not written yet.
        """
        entry = {"_id": self._id, **self.run_entry}  # the file is named after the id
        if self._output.text:
            entry["captured_out"] = self._output.text
        owed_metrics = self._writer.pending if self._writer else {}
        return write_failure_file(
            self.failure_dir, reason, self.runs, self.metrics, entry, owed_metrics, self._files.pending
        )
