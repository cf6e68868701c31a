"""The metrics journal FileStorage and TinyDB observers append to: one JSON line per metric and beat.

Each line is ``{"name", "steps", "values", "timestamps"}`` with timestamps in ISO format
(``2024-01-02T03:04:05.123456``), so a beat costs what is new, not the whole history.
FileStorage keeps it as ``<run dir>/metrics.journal`` until ``metrics.json`` is complete;
TinyDB keeps it as ``BASEDIR/metrics/<run id>.jsonl``, its only record of metrics.

Replaying skips a line a crash cut short. A failed append keeps its lines and writes them with
the next one, on a line of their own even if the failure left half a line behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

__all__ = ["MetricsJournal", "Series", "stamp"]

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


class MetricsJournal:
    """Appends metric batches to ``path`` and reads them back.

    Args:
        path: The journal file; its directory is created at the first append.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._backlog: list[str] = []
        # Whether the file may end in the middle of a line (None: not looked at yet).
        self._cut: bool | None = None

    def append(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> dict[str, Series]:
        """:meth:`add` and :meth:`flush`: the points as written (timestamps as text).

        Raises:
            OSError: the append failed; its lines are written with the next one.
        """
        batch = self.add(metrics_by_name)
        self.flush()
        return batch

    def add(self, metrics_by_name: dict[str, dict[str, list[Any]]]) -> dict[str, Series]:
        """Queue one line per metric for the next :meth:`flush`; return the points as queued."""
        batch: dict[str, Series] = {}
        for name, metric in metrics_by_name.items():
            series = {
                "steps": list(metric["steps"]),
                "values": list(metric["values"]),
                "timestamps": [stamp(value) for value in metric["timestamps"]],
            }
            batch[name] = series
            self._backlog.append(json.dumps({"name": name, **series}, default=str))
        return batch

    def flush(self) -> None:
        """Append the queued lines; after a failure they stay queued for the next flush."""
        if not self._backlog:
            return
        if self._cut is None:
            self._cut = not _ends_a_line(self.path)
        text = "\n".join(self._backlog) + "\n"
        if self._cut:
            text = "\n" + text
        try:
            try:
                _append(self.path, text)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                _append(self.path, text)
        except BaseException:
            self._cut = True  # the failure may have left part of a line
            raise
        self._cut = False
        self._backlog = []

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


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(text)


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
