"""Storage helpers of the MongoObserver: key sanitizing, append-only GridFS files, metric chunks.

Kept apart from :mod:`prefect_sacred.observers.mongo.observer` so it reads as the event flow;
nothing here imports pymongo at module import.

Metric chunking (how a metric with millions of points stays lossless and readable):
the ``metrics`` document of ``(run_id, name)`` -- the one ``info.metrics`` points to, the one
Omniboard and Incense read -- holds the most recent ``chunk_points`` points (default 100,000,
about 4.5 MB). When a flush would take it past that, its points move into
``<prefix>metrics_chunks`` as ``{metric_id, run_id, name, seq, steps, values, timestamps}``
documents of ``chunk_points`` points each, and the main document keeps the rest and counts
``archived_chunks``. The full series is the chunks with ``seq < archived_chunks`` in ``seq``
order followed by the main document: :func:`read_metric` returns it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

__all__ = [
    "AppendOnlyGridFile",
    "MetricWriter",
    "read_metric",
    "sanitize",
    "valid_key",
    "with_metric_refs",
]

_INT64 = (-(2**63), 2**63 - 1)
GRID_CHUNK = 255 * 1024


def valid_key(key: Any) -> str:
    """Sacred's ``force_valid_bson_key``: a leading ``$`` becomes ``@``, ``.`` becomes ``,``."""
    text = str(key)
    if text.startswith("$"):
        text = "@" + text[1:]
    return text.replace(".", ",").replace("\0", "")


def sanitize(value: Any) -> Any:
    """``value`` with every key MongoDB rejects renamed (as Sacred renames them), before writing.

    Also stores integers outside BSON's int64 as strings. Returns ``value`` itself when nothing
    needs changing, so the common case allocates nothing.
    """
    if isinstance(value, dict):
        changed = False
        items = []
        for key, item in value.items():
            new_key = key
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\0" in key:
                new_key = valid_key(key)
            new_item = sanitize(item)
            changed = changed or new_key is not key or new_item is not item
            items.append((new_key, new_item))
        return dict(items) if changed else value
    if isinstance(value, (list, tuple)):
        new = [sanitize(item) for item in value]
        if isinstance(value, tuple) or any(a is not b for a, b in zip(new, value, strict=True)):
            return new
        return value
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    return value


class AppendOnlyGridFile:
    """A GridFS file that grows by whole chunks: each byte is sent to the server once.

    :meth:`append` only adds to :attr:`pending`; :meth:`flush` stores the chunks that are full,
    so a file growing by small pieces costs one chunk write per ``chunk_size`` bytes instead of
    a rewrite of the last chunk per piece; ``flush(final=True)`` also stores the short last one.
    Chunks are written before the file's ``length``, so a reader (``gridfs.GridFS(db).get(id)``)
    always sees a consistent prefix and never a chunk longer than ``length`` says. State
    advances only after both writes succeeded, and chunks are upserted by ``(files_id, n)``, so
    a failed flush is simply repeated by the next one.
    """

    def __init__(
        self,
        database: Any,
        filename: str,
        content_type: str = "text/plain",
        metadata: dict[str, Any] | None = None,
        chunk_size: int = GRID_CHUNK,
    ) -> None:
        from bson import ObjectId

        self.files = database["fs.files"]
        self.chunks = database["fs.chunks"]
        self.filename = filename
        self.content_type = content_type
        self.metadata = metadata or {}
        self.chunk_size = max(1, min(chunk_size, GRID_CHUNK))
        # Chosen here, so a document may name the file before its first write succeeded.
        self.file_id: Any = ObjectId()
        self.created = False
        #: bytes in the stored file (its ``length``)
        self.length = 0
        #: bytes appended but not stored yet
        self.pending = bytearray()
        self._short_tail = b""  # a short last chunk already stored (by a final flush)

    @classmethod
    def open(cls, database: Any, file_id: Any) -> AppendOnlyGridFile | None:
        """Continue a file written by another process (``None`` if it does not exist)."""
        stored = database["fs.files"].find_one({"_id": file_id})
        if stored is None:
            return None
        self = cls(
            database,
            stored.get("filename", ""),
            stored.get("contentType", "text/plain"),
            stored.get("metadata"),
            int(stored.get("chunkSize", GRID_CHUNK)),
        )
        self.file_id, self.created, self.length = file_id, True, int(stored.get("length", 0))
        short = self.length % self.chunk_size
        if short:
            last = self.chunks.find_one({"files_id": file_id, "n": self.length // self.chunk_size})
            self._short_tail = bytes(last["data"])[:short] if last else b""
            self.length -= short - len(self._short_tail)
        return self

    def append(self, data: bytes) -> None:
        """Add ``data`` to the file, in memory until :meth:`flush`."""
        self.pending += data

    def flush(self, final: bool = False) -> None:
        """Store the full chunks of :attr:`pending` (with ``final``, the short last one too)."""
        from bson import Binary
        from pymongo import ReplaceOne

        if not self.created:
            self.files.update_one(
                {"_id": self.file_id},
                {
                    "$setOnInsert": {
                        "filename": self.filename,
                        "length": 0,
                        "chunkSize": self.chunk_size,
                        "uploadDate": _now(),
                        "contentType": self.content_type,
                        "metadata": self.metadata,
                    }
                },
                upsert=True,
            )
            self.created = True
        size = self.chunk_size
        total = len(self._short_tail) + len(self.pending)
        count = (total if final else total // size * size) - len(self._short_tail)
        if count <= 0:
            return
        buffer = self._short_tail + bytes(self.pending[:count])
        first = (self.length - len(self._short_tail)) // size
        self.chunks.bulk_write(
            [
                ReplaceOne(
                    {"files_id": self.file_id, "n": first + i},
                    {
                        "files_id": self.file_id,
                        "n": first + i,
                        "data": Binary(buffer[offset : offset + size]),
                    },
                    upsert=True,
                )
                for i, offset in enumerate(range(0, len(buffer), size))
            ],
            ordered=True,
        )
        length = self.length + count
        self.files.update_one({"_id": self.file_id}, {"$set": {"length": length, "uploadDate": _now()}})
        self.length = length
        del self.pending[:count]
        self._short_tail = buffer[len(buffer) // size * size :]

    def delete(self) -> None:
        """Remove the file; appending starts a new one (the content is being rewritten)."""
        from bson import ObjectId

        if self.created:
            self.chunks.delete_many({"files_id": self.file_id})
            self.files.delete_one({"_id": self.file_id})
        self.file_id, self.created, self.length = ObjectId(), False, 0
        self.pending, self._short_tail = bytearray(), b""


class MetricWriter:
    """Appends metric points to Sacred's ``metrics`` documents, chunking past ``chunk_points``.

    One instance per run. ``refs`` is ``{name: metrics _id as str}`` for ``info.metrics``.
    Points that could not be written stay in ``pending`` and go out with the next flush. A
    write that raised may still have been applied (a bulk write that failed part way, a reply
    lost with the connection): its metrics are *in doubt*, and the next flush first reads how
    many points they hold, so a retried write never doubles a point.
    """

    def __init__(self, metrics: Any, chunks: Any, run_id: Any, chunk_points: int = 100_000) -> None:
        self.metrics = metrics
        self.chunks = chunks
        self.run_id = run_id
        self.chunk_points = chunk_points
        self.refs: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.archived: dict[str, int] = {}
        self.pending: dict[str, dict[str, list[Any]]] = {}
        #: ``{name: points at the head of pending[name] whose write may have been applied}``.
        self.in_doubt: dict[str, int] = {}

    def load_existing(self) -> None:
        """Continue the metric documents already stored for this run (overwrite, reattach)."""
        for doc in self.metrics.find({"run_id": self.run_id}, {"name": 1, "archived_chunks": 1, "values": 1}):
            self.refs[doc["name"]] = str(doc["_id"])
            self.archived[doc["name"]] = int(doc.get("archived_chunks", 0))
            self.counts[doc["name"]] = len(doc.get("values", []))

    def add(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> None:
        for name, metric in metrics_by_name.items():
            stored = self.pending.setdefault(name, {"steps": [], "values": [], "timestamps": []})
            for key in ("steps", "values", "timestamps"):
                stored[key].extend(metric.get(key, []))

    def flush(self) -> None:
        """Write every pending point; a metric that fails keeps its points for the next flush.

        Metrics that fit their document go out in one ``bulk_write`` of ``$push`` updates (one
        round trip per beat, where Sacred makes one per metric).
        """
        from pymongo import UpdateOne

        if self.in_doubt:
            self._settle_doubts()
        keys = ("steps", "values", "timestamps")
        simple, chunked = [], []
        for name in list(self.pending):
            points = self.pending[name]
            if not points["values"]:
                del self.pending[name]
            elif self.counts.get(name, 0) + len(points["values"]) <= self.chunk_points:
                simple.append(name)
            else:
                chunked.append(name)
        if simple:
            try:
                result = self.metrics.bulk_write(
                    [
                        UpdateOne(
                            {"run_id": self.run_id, "name": name},
                            {"$push": {key: {"$each": self.pending[name][key]} for key in keys}},
                            upsert=True,
                        )
                        for name in simple
                    ],
                    ordered=True,
                )
            except Exception:
                self._doubt(simple)
                raise
            for index, upserted_id in result.upserted_ids.items():
                self.refs[simple[index]] = str(upserted_id)
            for name in simple:
                self.counts[name] = self.counts.get(name, 0) + len(self.pending.pop(name)["values"])
        for name in chunked:
            try:
                self._write_chunked(name, self.pending[name], self.counts.get(name, 0))
            except Exception:
                self._doubt([name])
                raise
            del self.pending[name]

    def _doubt(self, names: list[str]) -> None:
        for name in names:
            self.in_doubt[name] = len(self.pending[name]["values"])

    def _settle_doubts(self) -> None:
        """Read the metrics in doubt back: drop from ``pending`` the points a failed write did store."""
        names = list(self.in_doubt)
        found = self.metrics.find(
            {"run_id": self.run_id, "name": {"$in": names}},
            {"name": 1, "values": 1, "archived_chunks": 1},
        )
        stored = {doc["name"]: doc for doc in found}
        for name in names:
            doc = stored.get(name)
            before = self.archived.get(name, 0) * self.chunk_points + self.counts.get(name, 0)
            attempted = self.in_doubt.pop(name)
            if doc is None:
                continue
            archived, count = int(doc.get("archived_chunks", 0)), len(doc.get("values", []))
            if archived * self.chunk_points + count >= before + attempted:  # the write was applied
                points = self.pending.get(name)
                if points is not None:
                    for key in ("steps", "values", "timestamps"):
                        del points[key][:attempted]
                self.refs[name] = str(doc["_id"])
                self.counts[name], self.archived[name] = count, archived

    def _write_chunked(self, name: str, points: dict[str, list[Any]], count: int) -> None:
        """Move full chunks out of the main document; it keeps the most recent points."""
        from pymongo import ReplaceOne

        keys = ("steps", "values", "timestamps")
        main = self.metrics.find_one({"run_id": self.run_id, "name": name}) if count else None
        combined = {key: [*(main or {}).get(key, []), *points[key]] for key in keys}
        metric_id = main["_id"] if main else None
        if metric_id is None:
            result = self.metrics.update_one(
                {"run_id": self.run_id, "name": name},
                {"$setOnInsert": {key: [] for key in keys} | {"archived_chunks": 0}},
                upsert=True,
            )
            metric_id = (
                result.upserted_id
                or self.metrics.find_one({"run_id": self.run_id, "name": name}, {"_id": 1})["_id"]
            )
        seq = int((main or {}).get("archived_chunks", self.archived.get(name, 0)))
        size = self.chunk_points
        chunks = []
        while len(combined["values"]) > size:
            piece = {key: combined[key][:size] for key in keys}
            # A deterministic _id makes a repeated flush overwrite, never duplicate, a chunk.
            chunks.append(
                ReplaceOne(
                    {"_id": f"{metric_id}:{seq}"},
                    {
                        "_id": f"{metric_id}:{seq}",
                        "metric_id": str(metric_id),
                        "run_id": self.run_id,
                        "name": name,
                        "seq": seq,
                        **piece,
                    },
                    upsert=True,
                )
            )
            combined = {key: combined[key][size:] for key in keys}
            seq += 1
        if chunks:
            self.chunks.bulk_write(chunks, ordered=True)
        # Chunks first, then the main document: a crash in between leaves an orphan chunk that
        # readers ignore (its seq is not below archived_chunks), never a lost or doubled point.
        self.metrics.update_one({"_id": metric_id}, {"$set": {**combined, "archived_chunks": seq}})
        self.refs[name] = str(metric_id)
        self.counts[name] = len(combined["values"])
        self.archived[name] = seq


def with_metric_refs(info: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """``info`` whose ``metrics`` lists ``{name, id}`` of each metric document (Omniboard joins on it).

    References the run itself put in ``info["metrics"]`` stay, unless they name the same ids.
    """
    if not refs:
        return info
    ours = [{"name": name, "id": ref} for name, ref in refs.items()]
    own: list[Any] = info["metrics"] if isinstance(info.get("metrics"), list) else []
    known = set(refs.values())
    return {**info, "metrics": [m for m in own if not (isinstance(m, dict) and m.get("id") in known)] + ours}


def read_metric(metrics: Any, chunks: Any, run_id: Any, name: str) -> dict[str, list[Any]]:
    """The whole series of metric ``name`` of run ``run_id``: archived chunks, then the rest.

    Args:
        metrics: The ``metrics`` collection (``<prefix>_metrics`` with a prefix).
        chunks: The ``metrics_chunks`` collection next to it.
        run_id: The run's ``_id``.
        name: The metric's name.

    Returns:
        ``{"steps": [...], "values": [...], "timestamps": [...]}`` (empty lists if unknown).
    """
    series: dict[str, list[Any]] = {"steps": [], "values": [], "timestamps": []}
    main = metrics.find_one({"run_id": run_id, "name": name})
    if main is None:
        return series
    archived = int(main.get("archived_chunks", 0))
    if archived:
        query = {"metric_id": str(main["_id"]), "seq": {"$lt": archived}}
        for chunk in chunks.find(query).sort("seq", 1):
            for key in series:
                series[key].extend(chunk[key])
    for key in series:
        series[key].extend(main.get(key, []))
    return series


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
