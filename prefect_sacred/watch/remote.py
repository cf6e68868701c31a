"""Liveness of runs on other machines: a small Prefect event per beat, and silence measured by the watcher.

A run's journal lock tells a watcher on the same machine, at once and for sure, whether the
run's process lives (see :mod:`prefect_sacred.watch.liveness`). A run elsewhere, a plain
``python exp.py`` on another host killed with SIGKILL, has no lock the watcher can try and no
runner to tell Prefect: its flow run would stay Running forever. So each beat of a run also
sends one small event to Prefect (:mod:`prefect_sacred.flows.beat_events`), and the watcher,
already subscribed to Prefect's event stream, keeps the time of each run's last beat
(:class:`RemoteBeats`). A run whose journal is not on the watcher's machine and that is silent
for :func:`silence_limit` seconds is ended FAILED, with a trace saying so.

Why the limit is ``max(3 beat intervals, 300 s)`` by default (``PREFECT_SACRED_DEAD_AFTER``
sets the 300): silence is not death. A Slurm or PBS suspension (SIGSTOP for time slices), a
swap storm, a VM migrating, a network partition between the run and the server, or a laptop
asleep leave a live run silent for minutes; a GC pause for seconds. A run ended too eagerly
still ends up with its true status (its own completed event overrides the watcher's FAILED,
and its flow run is set Running again on its next beat), but its notifications have been sent.
Five minutes of silence is rare for a live run; waiting five minutes to learn of a dead one on
another host costs little. Silence is counted on the watcher's monotonic clock only while its
event stream is connected, and from its (re)connection at the earliest, so a watcher that was
itself stopped, asleep or cut off never ends a run for beats it could not hear.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DEAD_AFTER_ENV_VAR", "Heard", "RemoteBeats", "dead_after", "silence_limit"]

logger = logging.getLogger("prefect_sacred.watch")

#: Seconds of silence before a run on another machine is ended, at least (default 300).
DEAD_AFTER_ENV_VAR = "PREFECT_SACRED_DEAD_AFTER"
DEFAULT_DEAD_AFTER = 300.0
#: A run is never ended before this many of its beat intervals passed without a beat.
MISSED_BEATS = 3
#: A watcher loop later than this (seconds) was itself stopped or asleep: it heard nothing then.
_STALL = 5.0
#: Seconds after which a run the watcher ended, silent since, is forgotten.
_FORGET = 86_400.0


def dead_after() -> float:
    """The least silence (seconds) that ends a run on another machine: ``PREFECT_SACRED_DEAD_AFTER``."""
    value = os.environ.get(DEAD_AFTER_ENV_VAR, "").strip()
    try:
        return max(float(value), 0.0) if value else DEFAULT_DEAD_AFTER
    except ValueError:
        logger.warning(
            "%s=%r is not a number of seconds; using %.0f", DEAD_AFTER_ENV_VAR, value, DEFAULT_DEAD_AFTER
        )
        return DEFAULT_DEAD_AFTER


def silence_limit(interval: float, floor: float) -> float:
    """Seconds without a beat after which a run beating every ``interval`` seconds is dead."""
    return max(MISSED_BEATS * interval, floor)


@dataclass
class Heard:
    """What a watcher knows of one run on another machine."""

    payload: dict[str, Any]
    #: The watcher's monotonic clock at the run's last beat.
    last: float
    beat: int
    #: The beat at which the watcher ended the run (None: not ended).
    ended_at: int | None = None


class RemoteBeats:
    """The last beat of each run whose journal is not on this machine, and who fell silent.

    Args:
        floor: The least silence (seconds) that ends a run (default: :func:`dead_after`).
        local: Whether a run's journal (by key) is on this machine; those runs are left to the
            journal lock.
        clock: The monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        floor: float | None = None,
        local: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.floor = dead_after() if floor is None else floor
        self._local = local or _journal_here
        self._clock = clock
        self._runs: dict[str, Heard] = {}
        self._local_keys: set[str] = set()
        self._heard_since: float | None = None
        self._last_look = clock()
        self._lock = threading.Lock()

    def connected(self) -> None:
        """The event stream is (again) connected: silence counts from now at the earliest."""
        with self._lock:
            self._heard_since = self._clock()

    def disconnected(self) -> None:
        """The event stream was lost: no silence counts until it is back."""
        with self._lock:
            self._heard_since = None

    def heard(self, payload: dict[str, Any]) -> Heard | None:
        """A beat event arrived; returns the run's entry when the watcher had ended it (it lives)."""
        key = str(payload.get("key") or "")
        if not key or key in self._local_keys:
            if payload.get("ended"):
                self._local_keys.discard(key)
            return None
        with self._lock:
            followed = key in self._runs
        if not followed and payload.get("journal") and self._local(key):
            self._local_keys.add(key)  # its journal lock says whether it lives, sooner and surely
            return None
        beat = int(payload.get("beat") or 0)
        now = self._clock()
        with self._lock:
            known = self._runs.get(key)
            if payload.get("ended"):
                self._runs.pop(key, None)
                return None
            if known is None:
                self._runs[key] = Heard(payload, now, beat)
                return None
            if beat <= known.beat:  # an old beat again (the stream replays recent events on connect)
                return None
            revived = known.ended_at is not None
            known.payload, known.last, known.beat, known.ended_at = payload, now, beat, None
            return known if revived else None

    def silent(self) -> list[tuple[Heard, float]]:
        """The runs silent for longer than their limit, with their silence (seconds)."""
        now = self._clock()
        with self._lock:
            stalled = now - self._last_look > _STALL
            self._last_look = now
            if stalled and self._heard_since is not None:  # this watcher was stopped or asleep
                self._heard_since = now
            if self._heard_since is None:
                return []
            found = []
            for key, heard in list(self._runs.items()):
                if heard.ended_at is not None and now - heard.last > _FORGET:
                    del self._runs[key]  # ended, and silent ever since
                    continue
                silence = now - max(heard.last, self._heard_since)
                interval = float(heard.payload.get("interval") or 0.0)
                if heard.ended_at is None and silence > silence_limit(interval, self.floor):
                    found.append((heard, now - heard.last))
            return found

    def ended(self, heard: Heard) -> None:
        """The watcher ended this run; a later beat means it lives after all."""
        with self._lock:
            heard.ended_at = heard.beat

    def forget(self, heard: Heard) -> None:
        """Stop following this run (it ended, as Prefect or its backends say)."""
        with self._lock:
            self._runs.pop(str(heard.payload.get("key")), None)

    def __len__(self) -> int:
        return len(self._runs)


def _journal_here(key: str) -> bool:
    from prefect_sacred.core.journal import RunJournal

    return RunJournal.find(key) is not None
