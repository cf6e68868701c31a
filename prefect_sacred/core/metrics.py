"""``log_scalar``'s hot path: a check and an append to a packed array, drained by the heartbeat.

Points wait packed (:class:`PointBatch`, about 24 bytes a point) until each observer's delivery
thread builds Sacred's ``metrics_by_name`` from them, a bounded piece at a time, so a run's
memory does not grow with the points a tight loop logs between two beats.

What a metric point may be (one rule for every backend, applied when it is logged, so a value
no backend could store never reaches one and never costs the other points of its beat):

* the name is a ``str`` of 1 to :data:`MAX_NAME` characters without NUL (what the SQL backends'
  ``metric.name`` column holds; the others would store it, SQL would drop it);
* the value is a real number: ``int``, ``float``, ``bool``, a numpy scalar, a ``Decimal`` or
  any other :class:`numbers.Real` (``Fraction``), stored as a float. NaN and infinities are
  accepted and stored as Sacred stores them (``NaN``/``Infinity`` in JSON files, BSON doubles in
  MongoDB; SQL, which has no such values, stores NULL). An ``int`` beyond 64 bits is stored as a
  float (MongoDB holds no larger integer);
* the step is ``None`` (the metric's last step + 1, from 0), or a finite real number whose
  whole part fits in 64 bits (numpy integers included); ``bool`` counts as ``int``.

Anything else (complex numbers, strings, ``None`` as a value, arrays, a step of NaN or
``2**64``) raises :class:`TypeError` or :class:`ValueError` at the call, naming the metric and
the value, and nothing is recorded for it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import numbers
import operator
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["MAX_NAME", "MetricsLogger", "PointBatch", "check_point", "linearize_metrics"]

#: The longest metric name every backend stores (Sacred's SQL schema: VARCHAR(255)).
MAX_NAME = 255

_EPOCH = dt.datetime(1970, 1, 1)
_INT64_MIN, _INT64_END = -(2**63), 2**63
_EXACT_MIN, _EXACT_MAX = -(2**53), 2**53  # the integers a double holds exactly
#: Points per packed chunk and per ``metrics_by_name`` an observer is given at once.
CHUNK_POINTS = 50_000


def check_point(name: Any, value: Any, step: Any) -> tuple[Any, Any]:
    """``(value, step)`` as every backend stores them, or an error naming the metric.

    A ``step`` of None is passed through: the caller counts the metric's steps itself.

    Raises:
        TypeError: ``name`` is not a string, or ``value``/``step`` is not a real number.
        ValueError: a step that is not finite or beyond 64 bits, or a value too large for a float.
    """
    if type(name) is not str:
        raise TypeError(f"metric name {name!r} is not a string")
    if not name or len(name) > MAX_NAME or "\x00" in name:
        shown = repr(name if len(name) <= 60 else name[:60] + "...")
        raise ValueError(
            f"metric name {shown} ({len(name)} characters) cannot be stored by every backend: "
            f"a name is 1 to {MAX_NAME} characters without NUL (SQL's metric.name column)"
        )
    return _value(name, value), (step if step is None else _step(name, step))


def _value(name: str, value: Any) -> Any:
    kind = type(value)
    if kind is float or kind is bool:
        return value
    if kind is not int:
        value = _plain_number(name, "value", value)
        if type(value) is not int:
            return value
    if _INT64_MIN <= value < _INT64_END:
        return value
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"metric {name!r}: value {value!r} is too large to store") from None


def _step(name: str, step: Any) -> Any:
    if type(step) is not int:
        step = _plain_number(name, "step", step)
        if type(step) is float:
            if not math.isfinite(step):
                raise ValueError(f"metric {name!r}: step {step!r} is not a finite number")
            if not _INT64_MIN <= math.floor(step) < _INT64_END:
                raise ValueError(f"metric {name!r}: step {step!r} is beyond the range of a 64-bit integer")
            return step
        step = int(step)  # bool
    if not _INT64_MIN <= step < _INT64_END:
        raise ValueError(f"metric {name!r}: step {step!r} is beyond the range of a 64-bit integer")
    return step


def _plain_number(name: str, what: str, number: Any) -> Any:
    """A Python ``int``, ``float`` or ``bool`` for a numpy scalar or another real number."""
    if isinstance(number, (str, bytes, bytearray)):
        raise TypeError(f"metric {name!r}: {what} {number!r} is a string, not a number")
    item = getattr(number, "item", None)
    if callable(item) and getattr(number, "shape", ()) == ():  # a numpy scalar, or a 0-d array
        try:
            number = item()
        except (TypeError, ValueError):
            pass
    if type(number) in (int, float, bool):
        return number
    if isinstance(number, numbers.Integral):
        return operator.index(number)
    if isinstance(number, (numbers.Real, decimal.Decimal)):
        try:
            return float(number)
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"metric {name!r}: {what} {number!r} is not a float: {exc}") from None
    raise TypeError(f"metric {name!r}: {what} {number!r} ({type(number).__name__}) is not a real number")


class _Metric:
    """One metric's waiting points, in segments of one kind each, oldest first.

    Kinds: ``f`` (float values) and ``i`` (int values) while every step and int value lies
    within 2**53, so a double holds it exactly: the points go to a short flat list (a cheap
    append) that is packed into an ``array('d')`` of step, value, unix time triples every
    ``_PACK_AT`` entries. ``o`` (a flat list of the objects) from the first point that does not
    fit. The kind only ever changes to ``o``, so a metric has two segments at most; a segment's
    containers are never replaced, so a thread appending to one meanwhile loses nothing.
    """

    __slots__ = ("kind", "name", "next_step", "packed", "pending", "segments")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_step: Any = 0
        self.kind = ""
        self.packed = array("d")
        self.pending: list[Any] = []
        #: ``(kind, packed or None, pending)``, oldest first.
        self.segments: list[tuple[str, array[float] | None, list[Any]]] = []


#: Entries (three a point) a metric's flat list holds before they are packed.
_PACK_AT = 3 * 1024


class MetricsLogger:
    """Collects scalar metrics between beats, packed.

    ``log_scalar`` does the least possible work for the common case (a float value at an
    integer step: type checks, a step counter and one ``list.extend``, a single step for other
    threads; every 1,024 points, a pack into an array); other points take a locked path that
    validates them and keeps ints ints.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        # The metrics whose points so far were all floats at integer steps: the fast path.
        self._floats: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def log_scalar(self, name: str, value: Any, step: Any = None) -> None:
        """Queue one point; see the module's docstring for what a point may be.

        Raises:
            TypeError, ValueError: the point cannot be stored; nothing was recorded.
        """
        if type(value) is float and type(name) is str:
            metric = self._floats.get(name)
            if metric is not None:
                if step is None:
                    step = metric.next_step
                elif type(step) is not int or not _EXACT_MIN <= step <= _EXACT_MAX:
                    self._log_other(name, value, step)
                    return
                metric.next_step = step + 1
                pending = metric.pending
                pending += (step, value, time.time())  # in place, one step for other threads
                if len(pending) >= _PACK_AT:
                    self._pack(metric)
                return
        self._log_other(name, value, step)

    def _pack(self, metric: _Metric) -> None:
        with self._lock:  # a drain takes the packed points before the pending ones
            pending = metric.pending
            taken = len(pending) // 3 * 3
            chunk = pending[:taken]
            del pending[:taken]  # from the front: what was added meanwhile stays
            metric.packed.fromlist(chunk)

    def _log_other(self, name: Any, value: Any, step: Any) -> None:
        value, step = check_point(name, value, step)
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = _Metric(name)
            if step is None:
                step = metric.next_step
            metric.next_step = step + 1
            point = (step, value, time.time())
            kind = _kind(value, step)
            if kind != "o" and kind == metric.kind:
                metric.pending.extend(point)
            elif kind != "o" and not metric.kind:
                metric.kind = kind
                metric.segments.append((kind, metric.packed, metric.pending))
                if kind == "f":
                    self._floats[name] = metric
                metric.pending.extend(point)
            else:
                if metric.kind != "o":
                    metric.kind = "o"
                    self._floats.pop(name, None)
                    metric.segments.append(("o", None, []))
                metric.segments[-1][2].extend(point)
                return
        if len(metric.pending) >= _PACK_AT:
            self._pack(metric)

    def drain(self) -> PointBatch:
        """Everything logged since the last drain, packed, in chunks of ``CHUNK_POINTS``."""
        batch = PointBatch()
        size = CHUNK_POINTS * 3
        with self._lock:
            for metric in self._metrics.values():
                for kind, packed, pending in metric.segments:
                    if packed is not None:
                        while packed:  # packed holds whole points: they are packed under the lock
                            chunk = packed[:size]
                            del packed[:size]
                            batch.add_chunk(metric.name, kind, chunk)
                    # Whole points only: another thread may be adding one right now.
                    left = len(pending) // 3 * 3
                    while left:
                        taken = min(left, size)
                        objects = pending[:taken]
                        del pending[:taken]
                        batch.add_chunk(metric.name, kind, objects if kind == "o" else array("d", objects))
                        left -= taken
        return batch


def _kind(value: Any, step: Any) -> str:
    if type(step) is not int or not _EXACT_MIN <= step <= _EXACT_MAX:
        return "o"
    if type(value) is float:
        return "f"
    if type(value) is int and _EXACT_MIN <= value <= _EXACT_MAX:
        return "i"
    return "o"


class PointBatch:
    """Metric points waiting for the journal and the observers, packed (see ``_Metric``).

    Read-only once handed over: the journal encodes it, and each observer's delivery thread
    builds Sacred's ``metrics_by_name`` from it with :meth:`pieces`, a bounded piece at a time.
    """

    __slots__ = ("_chunks", "_count")

    def __init__(self) -> None:
        self._chunks: dict[str, list[tuple[str, Any]]] = {}
        self._count = 0

    def __len__(self) -> int:
        """How many points."""
        return self._count

    def add_chunk(self, name: str, kind: str, chunk: Any) -> None:
        """Add a chunk of ``kind`` (flat step, value, unix time triples) to metric ``name``."""
        self._chunks.setdefault(name, []).append((kind, chunk))
        self._count += len(chunk) // 3

    def extend(self, other: PointBatch) -> None:
        """Add the points of ``other`` after this batch's own (sharing its chunks)."""
        for name, chunks in other._chunks.items():
            self._chunks.setdefault(name, []).extend(chunks)
        self._count += other._count

    def parts(self, max_points: int = CHUNK_POINTS) -> Iterator[PointBatch]:
        """This batch as smaller batches of about ``max_points`` points, in order, sharing chunks."""
        part = PointBatch()
        for name, chunks in self._chunks.items():
            for kind, chunk in chunks:
                if part._count and part._count + len(chunk) // 3 > max_points:
                    yield part
                    part = PointBatch()
                part.add_chunk(name, kind, chunk)
        if part._count or not self._count:
            yield part

    def columns(self) -> Iterator[tuple[str, list[Any], list[Any], list[float]]]:
        """``(name, steps, values, unix times)`` per metric, as the Python values logged."""
        for name, chunks in self._chunks.items():
            steps: list[Any] = []
            values: list[Any] = []
            stamps: list[float] = []
            for kind, chunk in chunks:
                if kind == "o":
                    steps += chunk[0::3]
                    values += chunk[1::3]
                else:
                    steps += map(int, chunk[0::3])
                    values += chunk[1::3].tolist() if kind == "f" else map(int, chunk[1::3])
                stamps += chunk[2::3]
            yield name, steps, values, stamps

    def metrics_by_name(self) -> dict[str, dict[str, Any]]:
        """The points in Sacred's ``metrics_by_name`` shape (all of them: see :meth:`pieces`)."""
        by_name: dict[str, dict[str, Any]] = {}
        for name, steps, values, stamps in self.columns():
            timestamps = [_EPOCH + dt.timedelta(seconds=stamp) for stamp in stamps]
            by_name[name] = {"steps": steps, "values": values, "timestamps": timestamps, "name": name}
        return by_name

    def pieces(self, max_points: int = CHUNK_POINTS) -> Iterator[dict[str, dict[str, Any]]]:
        """``metrics_by_name`` dicts of about ``max_points`` points at most, in order."""
        for part in self.parts(max_points):
            yield part.metrics_by_name()


def linearize_metrics(entries: Iterable[tuple[str, Any, Any, float]]) -> dict[str, dict[str, Any]]:
    """Group ``(name, step, value, unix_time)`` entries into parallel lists per metric name."""
    by_name: dict[str, dict[str, Any]] = {}
    for name, step, value, stamp in entries:
        metric = by_name.get(name)
        if metric is None:
            metric = by_name[name] = {"steps": [], "values": [], "timestamps": [], "name": name}
        metric["steps"].append(step)
        metric["values"].append(value)
        metric["timestamps"].append(_EPOCH + dt.timedelta(seconds=stamp))
    return by_name
