"""``cout.txt`` and ``metrics.json`` in a bucket: uploads that grow with what is new.

Objects cannot be appended to, so each of the two files is a whole object plus *part objects*
holding what came after it:

* ``<run>/cout.txt`` and ``<run>/cout.txt.parts/<offset>``, the output from character
  ``offset`` on;
* ``<run>/metrics.json`` and ``<run>/metrics.journal/<points>``, journal lines (one JSON object
  per metric, as in :mod:`~prefect_sacred.observers.metrics_log`) with the points after
  the first ``points`` points.

A part name is where it continues, so a reader chains the parts that follow the whole object
(:func:`read_output`, :func:`read_metrics`) and never counts a point or character twice.

**The upload rule.** A beat uploads the whole file instead of a part while the file is small
(up to :data:`CHEAP_BYTES`, so Sacred's readers see it complete and current), and afterwards
only when it has doubled since it was last uploaded whole; otherwise it uploads a part with
what is new. Whole uploads then sum to at most twice the final size and parts to once, so the
bytes a run uploads are at most 3x its data (plus up to :data:`CHEAP_BYTES` per beat while the
file is under that size), whatever the beat interval. At the end of the run both files are
uploaded whole and the parts are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.metrics_log import MetricsJsonFile, Series, encode, log_lines
from prefect_sacred.observers.object_store.bucket import Bucket

__all__ = ["CHEAP_BYTES", "MetricsObject", "OutputObject", "read_metrics", "read_output"]

#: Files up to this size are uploaded whole at every beat.
CHEAP_BYTES = 256 * 1024
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


def _numbered(store: Bucket, prefix: str) -> dict[int, str]:
    keys, _ = store.listing(prefix + "/")
    tails = {key.rsplit("/", 1)[1]: key for key in keys}
    return {int(tail): key for tail, key in tails.items() if tail.isdigit()}


class OutputObject:
    """A run's captured output: ``cout.txt`` and its parts (see the module's upload rule).

    Keeps a count of the characters stored and the keys of its parts, never the output.
    """

    def __init__(self, store: Bucket, key: str) -> None:
        self.store = store
        self.key = key
        self.stored = 0  # characters in cout.txt and its parts; -1 unknown (write whole next)
        self.whole_bytes = 0  # size of cout.txt as last uploaded whole
        self.part_bytes = 0  # bytes in parts since
        self.parts: list[str] = []

    def update(self, captured_out: str, output_delta: OutputDelta | None) -> None:
        """Store a beat's output (``captured_out`` is read now and not kept)."""
        new = output_delta.appended_to(self.stored) if output_delta is not None else None
        stored, self.stored = self.stored, -1  # unknown until the upload succeeded
        if new is None:
            self._put_whole(_encode(captured_out))
            self.stored = len(captured_out)
            return
        data = _encode(new)
        if not data:
            pass
        elif self.whole_bytes + self.part_bytes + len(data) <= CHEAP_BYTES or (
            self.part_bytes + len(data) >= self.whole_bytes
        ):
            self._put_whole(_encode(captured_out))
        else:
            key = f"{self.key}.parts/{stored:015d}"
            self.store.put(key, data, _TEXT)
            self.parts.append(key)
            self.part_bytes += len(data)
        self.stored = stored + len(new)

    def _put_whole(self, data: bytes) -> None:
        self.store.put(self.key, data, _TEXT)
        self.whole_bytes, self.part_bytes = len(data), 0
        parts, self.parts = self.parts, []
        self.store.delete(parts)

    def adopt_parts(self) -> None:
        """Take over the parts a process that died left behind (:meth:`finish` merges them)."""
        self.parts = list(_numbered(self.store, self.key + ".parts").values())
        self.stored = -1

    def finish(self) -> None:
        """Upload cout.txt whole if parts hold some of the output, and delete the parts."""
        if self.parts:
            self._put_whole(_encode(read_output(self.store, self.key)))

    def read(self) -> str:
        """The whole output stored (cout.txt and its parts)."""
        return read_output(self.store, self.key)


def read_output(store: Bucket, key: str) -> str:
    """The output stored under ``key`` (``cout.txt``) followed by the parts that continue it."""
    for _ in range(5):  # a part deleted while we read: a concurrent upload made it whole
        data = store.get(key)
        text = data.decode("utf-8", errors="replace") if data else ""
        parts = _numbered(store, key + ".parts")
        while len(text) in parts:
            part = store.get(parts.pop(len(text)))
            if part is None:
                break
            text += part.decode("utf-8", errors="replace")
        else:
            return text
    return text


class MetricsObject:
    """A run's metrics: ``metrics.json`` and journal parts in the bucket (see the upload rule).

    :meth:`add` accepts a beat's points and :meth:`flush` uploads them; points whose upload
    failed are uploaded with the next flush. :meth:`append` does both or neither: when the
    upload fails the points are taken back, so the caller can send the same batch again without
    doubling a point. ``metrics.json`` is built in a local spool file
    (:class:`~prefect_sacred.observers.metrics_log.MetricsJsonFile`, each point encoded
    once) and uploaded from there, so no point stays in memory once it is in the spool.
    """

    def __init__(self, store: Bucket, run_key: str) -> None:
        self.store = store
        self.key = f"{run_key}/metrics.json"
        self.journal = f"{run_key}/metrics.journal"
        self._spool: MetricsJsonFile | None = None  # created at first use
        self.points = 0  # points accepted
        self.stored = 0  # points uploaded (metrics.json and parts)
        self.pending: list[str] = []  # journal lines of the points not uploaded yet
        self.whole_points = -1  # points in metrics.json as last uploaded; -1 never uploaded
        self.whole_bytes = 0
        self.parts: list[str] = []

    @property
    def spool(self) -> MetricsJsonFile:
        """The local file ``metrics.json`` is uploaded from (in a temporary directory)."""
        if self._spool is None:
            directory = tempfile.mkdtemp(prefix="prefect-sacred-metrics-")
            self._spool = MetricsJsonFile(os.path.join(directory, "metrics.json"))
        return self._spool

    def add(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> None:
        """Accept new points: ``{name: {"steps", "values", "timestamps"}}``."""
        batch = {name: encode(metric) for name, metric in metrics_by_name.items() if metric["values"]}
        self.pending.extend(line[:-1] for name, encoded in batch.items() for line in log_lines(name, encoded))
        self.spool.add_encoded(batch)
        self.points += sum(points for points, _ in batch.values())

    def append(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> None:
        """:meth:`add` and :meth:`flush`; if the upload raises, the points are not kept."""
        mark, points, pending = self.spool.mark(), self.points, len(self.pending)
        self.add(metrics_by_name)
        try:
            self.flush()
        except BaseException:
            self.spool.rollback(mark)
            self.points = points
            del self.pending[pending:]
            raise

    def restore(self, metrics: dict[str, Series], parts: list[str]) -> None:
        """Continue from what is stored (a run finished by another process)."""
        self.spool.reset()
        self.spool.add(metrics)
        self.points = self.stored = sum(len(series.get("values", [])) for series in metrics.values())
        self.parts = parts

    def flush(self) -> None:
        """Upload the points accepted since the last flush."""
        if self.whole_points >= 0 and not self.pending:
            return
        per_point = self.whole_bytes / self.whole_points if self.whole_points > 0 else 60
        if (
            self.whole_points < 0
            or self.points * per_point <= CHEAP_BYTES
            or self.points >= 2 * self.whole_points
        ):
            self.put_whole()
            return
        key = f"{self.journal}/{self.stored:012d}"
        self.store.put(key, ("\n".join(self.pending) + "\n").encode(), "application/x-ndjson")
        self.parts.append(key)
        self.stored, self.pending = self.points, []

    def put_whole(self) -> None:
        """Upload metrics.json with every point."""
        size = self.spool.write(before=lambda path: self.store.upload_file(self.key, path, _JSON))
        self.whole_points, self.whole_bytes = self.points, size
        self.stored, self.pending = self.points, []

    def finish(self) -> None:
        """Upload metrics.json complete, delete the journal parts and the local spool."""
        self.put_whole()
        parts, self.parts = self.parts, []
        self.store.delete(parts)
        if self._spool is not None:
            shutil.rmtree(os.path.dirname(self._spool.path), ignore_errors=True)
            self._spool = None


def read_metrics(store: Bucket, run_key: str) -> dict[str, Series]:
    """Every point of run ``run_key``: ``metrics.json`` and the journal parts that continue it."""
    data = store.get(f"{run_key}/metrics.json")
    metrics: dict[str, Series] = json.loads(data) if data else {}
    points = sum(len(series.get("values", [])) for series in metrics.values())
    parts = _numbered(store, f"{run_key}/metrics.journal")
    while points in parts:
        text = store.get(parts.pop(points))
        if text is None:
            break
        for line in text.decode("utf-8", errors="replace").splitlines():
            try:
                batch = json.loads(line)
                name, values = batch["name"], batch["values"]
            except (ValueError, TypeError, KeyError):
                continue
            series = metrics.setdefault(name, {"values": [], "steps": [], "timestamps": []})
            series["values"].extend(values)
            series["steps"].extend(batch.get("steps", []))
            series["timestamps"].extend(batch.get("timestamps", []))
            points += len(values)
    return metrics
