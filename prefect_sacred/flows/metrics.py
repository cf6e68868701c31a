"""``log_scalar``'s hot path: an append to a thread-safe deque, drained by the heartbeat."""

from __future__ import annotations

import datetime as dt
import numbers
import time
from collections import deque
from typing import Any

__all__ = ["MetricsLogger", "linearize_metrics"]

_EPOCH = dt.datetime(1970, 1, 1)
_PLAIN = (int, float, bool)


class MetricsLogger:
    """Collects scalar metrics between beats.

    ``log_scalar`` does the least possible work (a step counter and one deque append of a raw
    ``time.time()``); conversion to datetimes and grouping by name happen at drain time, on the
    heartbeat thread.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[str, Any, Any, float]] = deque()
        self._next_step: dict[str, Any] = {}

    def log_scalar(self, name: str, value: Any, step: Any = None) -> None:
        if step is None:
            step = self._next_step.get(name, 0)
        elif type(step) is not int and hasattr(step, "item"):
            step = step.item()
        if type(value) is not float and hasattr(value, "item"):  # numpy scalar -> Python scalar
            value = value.item()
        self._next_step[name] = step + 1
        self._pending.append((name, step, value, time.time()))

    def drain(self) -> dict[str, dict[str, Any]]:
        """Everything logged since the last drain, in Sacred's ``metrics_by_name`` shape."""
        pending = self._pending
        entries = [pending.popleft() for _ in range(len(pending))]
        return linearize_metrics(entries)


def linearize_metrics(entries: list[tuple[str, Any, Any, float]]) -> dict[str, dict[str, Any]]:
    """Group ``(name, step, value, unix_time)`` entries into parallel lists per metric name."""
    by_name: dict[str, dict[str, Any]] = {}
    for name, step, value, stamp in entries:
        metric = by_name.get(name)
        if metric is None:
            metric = by_name[name] = {"steps": [], "values": [], "timestamps": [], "name": name}
        metric["steps"].append(step)
        # Decimal, Fraction and other numbers become floats here, off the hot path, so every
        # backend can store them.
        if type(value) not in _PLAIN and isinstance(value, numbers.Number):
            value = float(value)  # type: ignore[arg-type]
        metric["values"].append(value)
        metric["timestamps"].append(_EPOCH + dt.timedelta(seconds=stamp))
    return by_name
