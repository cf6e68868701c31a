"""The metrics journal FileStorage and TinyDB observers append to: one JSON line per metric and beat.

Each line is ``{"name", "steps", "values", "timestamps"}`` with timestamps in ISO format
(``2024-01-02T03:04:05.123456``), so a beat costs what is new, not the whole history.
FileStorage keeps it as ``<run dir>/metrics.journal`` until ``metrics.json`` is complete;
TinyDB keeps it as ``BASEDIR/metrics/<run id>.jsonl``, its only record of metrics.

Replaying skips a line a crash cut short. An append that failed is cut off again, so sending
the same batch again never doubles a point (and should the cut fail too, the next append starts
on a line of its own and replay skips the broken one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

__all__ = [
    "Encoded",
    "MetricsJsonFile",
    "MetricsLog",
    "Series",
    "StaleMetricsFile",
    "encode",
    "log_lines",
    "stamp",
]

#: ``{"values": [...], "steps": [...], "timestamps": [ISO strings]}``, one metric's points.
Series = dict[str, list[Any]]


def stamp(value: Any) -> Any:
    """A metric timestamp in the journal's ISO format (naive UTC datetimes, ten times faster
    than ``strftime``); other values are kept as they are."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and value.year >= 1000:
            return value.isoformat(timespec="microseconds")
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return value


#: One metric's points of a batch, encoded once for both files: ``(points, {key: fragments})``.
#: A fragment is the JSON of a slice of the key's list without its brackets, its items
#: separated as ``json.dumps(..., indent=2)`` separates them inside ``metrics.json``.
Encoded = tuple[int, dict[str, list[str]]]

#: ``json.dumps(..., sort_keys=True)`` order of a series' keys in ``metrics.json``.
_KEYS = ("steps", "timestamps", "values")
#: What separates two points of a series in ``json.dumps(..., indent=2)`` output.
_SEPARATOR = ",\n      "
#: Points encoded at a time: a batch of a million points never has all its text twice over.
_SLICE = 20_000


def encode(metric: dict[str, list[Any]]) -> Encoded:
    """Encode one metric's ``steps``, ``values`` and ``timestamps`` (datetimes become ISO text).

    Each list is encoded once, slice by slice, by the C encoder. A raw newline never occurs
    inside a JSON string, so the separators can be swapped afterwards for the journal's.
    """
    points = len(metric["values"])
    fragments: dict[str, list[str]] = {key: [] for key in _KEYS}
    for start in range(0, points, _SLICE):
        for key in _KEYS:
            items = metric[key][start : start + _SLICE]
            if key == "timestamps":
                items = list(map(stamp, items))
            fragments[key].append(json.dumps(items, separators=(_SEPARATOR, ": "), default=str)[1:-1])
    return points, fragments


def log_lines(name: str, encoded: Encoded) -> Iterator[str]:
    """The journal's lines for one metric of a batch (one per slice), each ending in a newline."""
    fragments = encoded[1]
    prefix = f'{{"name": {json.dumps(name)}'
    for index in range(len(fragments["values"])):
        fields = "".join(f', "{key}": [{fragments[key][index].replace(_SEPARATOR, ", ")}]' for key in _KEYS)
        yield f"{prefix}{fields}}}\n"


class MetricsLog:
    """Appends metric batches to ``path`` and reads them back.

    An append that raised stored nothing a retry would duplicate: what it wrote is cut off
    again (or, if that fails too, left as a line :func:`replay` skips), so the caller may send
    the same batch again.

    Args:
        path: The journal file; its directory is created at the first append.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # Whether the file may end in the middle of a line (None: not looked at yet).
        self._cut: bool | None = None

    def append(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> dict[str, Encoded]:
        """Append the batch (a line per metric and slice); return the points as encoded.

        Raises:
            OSError: nothing was appended (the batch may be sent again).
        """
        batch = {name: encode(metric) for name, metric in metrics_by_name.items() if metric["values"]}
        if batch:
            self._write(line for name, encoded in batch.items() for line in log_lines(name, encoded))
        return batch

    def _write(self, lines: Iterable[str]) -> None:
        if self._cut is None:
            self._cut = not _ends_a_line(self.path)
        cut = self._cut
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # Unbuffered: after a failure nothing is left in a buffer to be written at close.
        with open(self.path, "ab", buffering=0) as journal:
            size = journal.seek(0, os.SEEK_END)
            try:
                for number, line in enumerate(lines):
                    view = memoryview((("\n" + line) if cut and not number else line).encode("utf-8"))
                    while view:
                        view = view[journal.write(view) or 0 :]
            except BaseException:
                self._cut = True  # the failure may have left part of a line
                try:
                    os.truncate(self.path, size)  # a retry must not find a part of this batch
                    self._cut = cut
                except OSError:
                    pass
                raise
        self._cut = False

    def replay(self) -> dict[str, Series]:
        """Every point in the journal, per metric in the order appended (``{}`` if missing)."""
        return replay(self.path)

    def remove(self) -> None:
        """Delete the journal file, if it exists."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def replay(path: str) -> dict[str, Series]:
    """The points of the journal at ``path``: ``{name: {"values", "steps", "timestamps"}}``."""
    metrics: dict[str, Series] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as journal:
            for line in journal:
                try:
                    batch = json.loads(line)
                    series = (batch["name"], batch["values"], batch["steps"], batch["timestamps"])
                except (ValueError, TypeError, KeyError):  # a line cut short by a crash, or blank
                    continue
                name, values, steps, timestamps = series
                stored = metrics.setdefault(name, {"values": [], "steps": [], "timestamps": []})
                stored["values"].extend(values)
                stored["steps"].extend(steps)
                stored["timestamps"].extend(timestamps)
    except OSError:
        pass
    return metrics


def _ends_a_line(path: str) -> bool:
    """Whether ``path`` is missing, empty or ends with a newline."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True


_BLOCK = 1 << 20


class MetricsJsonFile:
    """``metrics.json`` exactly as ``json.dumps(metrics, sort_keys=True, indent=2)`` writes it,
    rewritten at the cost of the points added since the last write.

    Only the new points are encoded; the points already in the file are copied from it, byte
    for byte, between offsets kept per metric. No point is kept in memory once written, so
    memory does not grow with the run's history. If the file is not the one last written (a
    failed rewrite is harmless, but another program may change it), :meth:`write` raises
    :class:`StaleMetricsFile` and the caller starts again with :meth:`reset`.

    Args:
        path: The file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.reset()

    def reset(self) -> None:
        """Forget the file: the next :meth:`write` writes only the points added after this."""
        # Per metric, offsets in the file: its entry's start, the end of its steps, timestamps
        # and values, and its end.
        self._layout: dict[str, tuple[int, int, int, int, int]] = {}
        self._written: tuple[int, int] = (-1, -1)  # size and mtime of the file as written
        # Encoded points not in the file yet: {name: {key: [fragment per batch]}}.
        self._pending: dict[str, dict[str, list[str]]] = {}

    def add(self, batch: dict[str, Series]) -> None:
        """Encode the points of ``batch`` (``{name: {steps, values, timestamps}}``) for the next write."""
        self.add_encoded({name: encode(series) for name, series in batch.items() if series["values"]})

    def add_encoded(self, batch: dict[str, Encoded]) -> None:
        """Take points already encoded (what :meth:`MetricsLog.append` returns)."""
        for name, (_points, encoded) in batch.items():
            fragments = self._pending.setdefault(name, {key: [] for key in _KEYS})
            for key in _KEYS:
                fragments[key].extend(encoded[key])

    def mark(self) -> dict[str, int]:
        """Where the points not written yet end now, for :meth:`rollback`."""
        return {name: len(fragments["values"]) for name, fragments in self._pending.items()}

    def rollback(self, mark: dict[str, int]) -> None:
        """Forget the points added since :meth:`mark` (none may have been written since)."""
        for name in list(self._pending):
            if name not in mark:
                del self._pending[name]
                continue
            for fragments in self._pending[name].values():
                del fragments[mark[name] :]

    def write(self, before: Callable[[str], None] | None = None) -> int:
        """Replace the file with every point added so far; return its size in bytes.

        Args:
            before: Called with the new file's temporary path before it replaces the old one
                (an upload of it); if it raises, nothing changes.

        Raises:
            StaleMetricsFile: the file changed since the last write; nothing was written.
            OSError: nothing was written; the points stay for the next write.
        """
        from prefect_sacred.observers.files import replacing

        names = sorted(self._layout.keys() | self._pending.keys())
        layout: dict[str, tuple[int, int, int, int, int]] = {}
        with self._previous() as old, replacing(self.path, before) as out:
            if not names:
                out.write(b"{}")
            else:
                out.write(b"{")
            for index, name in enumerate(names):
                if index:
                    out.write(b",")
                new = self._pending.get(name)
                offsets = [out.tell()]
                kept = self._layout.get(name)
                if kept is None:
                    assert new is not None
                    out.write(b"\n  " + json.dumps(name).encode() + b": {")
                    for number, key in enumerate(_KEYS):
                        out.write(f'{"," if number else ""}\n    "{key}": [\n      '.encode())
                        _write_fragments(out, new[key], first=True)
                        offsets.append(out.tell())
                        out.write(b"\n    ]")
                    out.write(b"\n  }")
                else:
                    for number, key in enumerate(_KEYS):
                        _copy(old, kept[number], kept[number + 1], out)
                        if new is not None:
                            _write_fragments(out, new[key], first=False)
                        offsets.append(out.tell())
                    _copy(old, kept[3], kept[4], out)
                offsets.append(out.tell())
                layout[name] = (offsets[0], offsets[1], offsets[2], offsets[3], offsets[4])
            if names:
                out.write(b"\n}")
            size = out.tell()
        written = os.stat(self.path)
        self._layout, self._written, self._pending = layout, (written.st_size, written.st_mtime_ns), {}
        return size

    @contextlib.contextmanager
    def _previous(self) -> Iterator[BinaryIO | None]:
        if not self._layout:
            yield None
            return
        try:
            old = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise StaleMetricsFile(f"{self.path} disappeared") from None
        with old:
            found = os.fstat(old.fileno())
            if (found.st_size, found.st_mtime_ns) != self._written:
                raise StaleMetricsFile(f"{self.path} changed since it was written")
            yield old


class StaleMetricsFile(RuntimeError):
    """``metrics.json`` is not the file :class:`MetricsJsonFile` wrote last."""


def _write_fragments(out: BinaryIO, fragments: list[str], first: bool) -> None:
    """Write ``fragments`` separated as points are, one at a time (never all joined at once)."""
    separator = _SEPARATOR.encode()
    for index, fragment in enumerate(fragments):
        if index or not first:
            out.write(separator)
        out.write(fragment.encode())


def _copy(source: BinaryIO | None, start: int, end: int, target: BinaryIO) -> None:
    assert source is not None
    source.seek(start)
    remaining = end - start
    while remaining > 0:
        block = source.read(min(_BLOCK, remaining))
        if not block:
            raise StaleMetricsFile("metrics.json ended early")
        target.write(block)
        remaining -= len(block)
