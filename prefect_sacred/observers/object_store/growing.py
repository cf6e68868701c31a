"""``cout.txt`` and ``metrics.json`` in a bucket: uploads that grow with what is new.

Objects cannot be appended to, so each of the two files is a whole object plus *part objects*
holding what came after it:

* ``<run>/cout.txt`` and ``<run>/cout.txt.parts/<offset>``, the output from character
  ``offset`` on;
* ``<run>/metrics.json`` and ``<run>/metrics.journal/<points>``, journal lines (one JSON object
  per metric, as in :mod:`~prefect_sacred.observers.metrics_journal`) with the points after
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
from typing import Any

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.metrics_journal import Series, stamp
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
    """A run's metrics: all points in memory, ``metrics.json`` and journal parts in the bucket.

    :meth:`add` accepts a beat's points and :meth:`flush` uploads them (see the module's upload
    rule); points whose upload failed are uploaded with the next flush.
    """

    def __init__(self, store: Bucket, run_key: str) -> None:
        self.store = store
        self.key = f"{run_key}/metrics.json"
        self.journal = f"{run_key}/metrics.journal"
        self.metrics: dict[str, Series] = {}
        self.points = 0  # points accepted
        self.stored = 0  # points uploaded (metrics.json and parts)
        self.pending: list[str] = []  # journal lines of the points not uploaded yet
        self.whole_points = -1  # points in metrics.json as last uploaded; -1 never uploaded
        self.whole_bytes = 0
        self.parts: list[str] = []

    def add(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> None:
        """Accept new points: ``{name: {"steps", "values", "timestamps"}}``."""
        for name, metric in metrics_by_name.items():
            series = {
                "steps": list(metric["steps"]),
                "values": list(metric["values"]),
                "timestamps": [stamp(value) for value in metric["timestamps"]],
            }
            self.pending.append(json.dumps({"name": name, **series}, default=str))
            stored = self.metrics.setdefault(name, {"values": [], "steps": [], "timestamps": []})
            for field in ("values", "steps", "timestamps"):
                stored[field].extend(series[field])
            self.points += len(series["values"])

    def restore(self, metrics: dict[str, Series], parts: list[str]) -> None:
        """Continue from what is stored (a run finished by another process)."""
        self.metrics = metrics
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
        data = json.dumps(self.metrics, sort_keys=True, indent=2, default=str).encode()
        self.store.put(self.key, data, _JSON)
        self.whole_points, self.whole_bytes = self.points, len(data)
        self.stored, self.pending = self.points, []

    def finish(self) -> None:
        """Upload metrics.json complete and delete the journal parts."""
        self.put_whole()
        parts, self.parts = self.parts, []
        self.store.delete(parts)


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
