"""Liveness of runs on other machines: a small Prefect event per beat, and silence measured by the watcher.

A run's journal lock tells a watcher on the same machine, at once and for sure, whether the
run's process lives (see :mod:`prefect_sacred.watch.liveness`). A run elsewhere, a plain
``python exp.py`` on another host killed with SIGKILL, has no lock the watcher can try and no
runner to tell Prefect: its flow run would stay Running forever. So each beat of a run also
sends one small event, :data:`BEAT_EVENT`, to Prefect (:class:`BeatSender`), and the watcher,
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

Cost (``benchmarks/bench_beat_events.py``): per beat, about 16 µs on the run's heartbeat thread
(a dict put in a one-slot mailbox), then one HTTP POST of about 750 bytes to Prefect's events
endpoint from a thread of the sender's own (1.4 ms of CPU; stored about 5 ms later), and one
event row in Prefect's database (kept ``PREFECT_SERVER_EVENTS_RETENTION_PERIOD``, 7 days by
default). A slow or absent server never holds the run: the mailbox keeps only the latest beat.
``PREFECT_SACRED_BEAT_EVENTS=off`` turns the events off.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect_sacred._prefect_api import close_client, open_client

__all__ = [
    "BEAT_EVENT",
    "BEAT_EVENTS_ENV_VAR",
    "DEAD_AFTER_ENV_VAR",
    "BeatSender",
    "RemoteBeats",
    "beat_events_enabled",
    "beat_sender_for",
    "dead_after",
    "silence_limit",
]

logger = logging.getLogger("prefect_sacred.watch")

#: The event a run sends to Prefect at each beat.
BEAT_EVENT = "prefect-sacred.run.heartbeat"
#: ``off`` (or ``0``, ``false``, ``no``) sends no beat events.
BEAT_EVENTS_ENV_VAR = "PREFECT_SACRED_BEAT_EVENTS"
#: Seconds of silence before a run on another machine is ended, at least (default 300).
DEAD_AFTER_ENV_VAR = "PREFECT_SACRED_DEAD_AFTER"
DEFAULT_DEAD_AFTER = 300.0
#: A run is never ended before this many of its beat intervals passed without a beat.
MISSED_BEATS = 3
#: A watcher loop later than this (seconds) was itself stopped or asleep: it heard nothing then.
_STALL = 5.0
#: Seconds after which a run the watcher ended, silent since, is forgotten.
_FORGET = 86_400.0


def beat_events_enabled() -> bool:
    """Whether runs send a Prefect event per beat (``PREFECT_SACRED_BEAT_EVENTS`` not off)."""
    return os.environ.get(BEAT_EVENTS_ENV_VAR, "").strip().lower() not in {"0", "off", "false", "no"}


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


class BeatSender:
    """Sends a run's beat events to Prefect from a daemon thread; :meth:`beat` never waits.

    Args:
        identity: What the watcher needs to know and end the run: ``key`` (its journal's key),
            ``run_id``, ``experiment``, ``flow_run_id``, ``flow_run_name``, ``interval``; host
            and pid are added.
        timeout: Seconds each POST may take.
    """

    def __init__(self, identity: dict[str, Any], timeout: float = 5.0) -> None:
        self.identity = {**identity, "host": socket.gethostname(), "pid": os.getpid()}
        self.timeout = timeout
        #: Beats sent, and beats replaced by a later one before they could be sent.
        self.sent = 0
        self.dropped = 0
        self._beats = 0
        self._slot: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._warned = False
        self._api: Any = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="prefect-sacred-beat-events")
        self._thread.start()

    def beat(self, ended: bool = False) -> None:
        """Hand the sending thread a beat (the run's last when ``ended``), replacing one unsent."""
        with self._lock:
            if self._closed:
                return
            self._beats += 1
            if self._slot is not None:
                self.dropped += 1
            self._slot = {"beat": self._beats, "ended": ended, "occurred": dt.datetime.now(dt.UTC)}
            self._closed = ended
        self._wake.set()

    def close(self) -> None:
        """The run ended: send its last beat, saying so (if the process lives long enough).

        A run that never beat is known to no watcher: its thread just ends.
        """
        with self._lock:
            if self._beats == 0 and not self._closed:
                self._closed = True
                self._slot = {"quiet": True}
                self._wake.set()
                return
        self.beat(ended=True)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                item, self._slot = self._slot, None
                self._wake.clear()
            if item is None:
                continue
            if item.get("quiet"):
                return
            try:
                self._send(item)
                self.sent += 1
            except Exception as exc:  # Prefect slow or away: the next beat tries again
                self._drop_client()
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "beat events of run %s not sent: %s", self.identity.get("run_id"), _describe(exc)
                    )
            if item["ended"]:
                self._drop_client()
                return

    def _send(self, item: dict[str, Any]) -> None:
        from prefect.events.schemas.events import Event

        identity = self.identity
        event = Event.model_validate(
            {
                "event": BEAT_EVENT,
                "occurred": item["occurred"],
                "resource": {
                    "prefect.resource.id": f"prefect-sacred.run.{identity['key']}",
                    "prefect.resource.name": str(identity.get("run_id")),
                },
                "related": [
                    {
                        "prefect.resource.id": f"prefect.flow-run.{identity['flow_run_id']}",
                        "prefect.resource.role": "flow-run",
                        "prefect.resource.name": str(identity.get("flow_run_name") or ""),
                    }
                ],
                "payload": {**identity, "beat": item["beat"], "ended": item["ended"]},
                "id": uuid.uuid4(),
            }
        )
        response = self._client().request("POST", "/events", json=[event.model_dump(mode="json")])
        response.raise_for_status()

    def _client(self) -> Any:
        if self._api is None:
            self._api = open_client(self.timeout)
        return self._api

    def _drop_client(self) -> None:
        client, self._api = self._api, None
        close_client(client)


def beat_sender_for(
    prefect_meta: Any,
    *,
    run_id: Any,
    experiment: str | None,
    interval: float,
    journal: bool,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> BeatSender | None:
    """A sender of a run's beats as Prefect events, or None when no watcher could hear them.

    Args:
        prefect_meta: The run's ``meta_info["prefect"]`` (its flow run, and task run for a trial).
        run_id: The run's ``_id`` in its observers.
        experiment: The experiment's name.
        interval: Seconds between the run's beats.
        journal: Whether the run keeps a journal (a watcher on its machine asks the lock instead).
        log: Where to say that the run sends no beat events after all.

    Returns:
        None for a run outside a flow run, with beat events off or no Prefect API set.
    """
    from prefect.settings import PREFECT_API_URL

    from prefect_sacred.journal.records import encode_value

    if not isinstance(prefect_meta, dict) or not prefect_meta.get("flow_run_id"):
        return None
    if not beat_events_enabled() or not PREFECT_API_URL.value():  # no server to hear them
        return None
    flow_name = experiment
    try:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None and context.flow is not None:
            flow_name = context.flow.name  # what the watcher of the flow knows it by
    except Exception:  # outside Prefect's context: the experiment's name is the flow's
        pass
    try:
        return BeatSender(
            {
                "flow": flow_name,
                "key": prefect_meta.get("task_run_id") or prefect_meta["flow_run_id"],
                "run_id": encode_value(run_id),
                "experiment": experiment,
                "flow_run_id": prefect_meta["flow_run_id"],
                "flow_run_name": prefect_meta.get("flow_run_name"),
                "interval": interval,
                "journal": journal,
            }
        )
    except Exception as exc:  # liveness events are a nicety: never a reason to fail the run
        log.warning("run %s sends no beat events: %s: %s", run_id, type(exc).__name__, exc)
        return None


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
    from prefect_sacred.journal.journal import RunJournal

    return RunJournal.find(key) is not None


def _describe(exc: BaseException) -> str:
    from prefect_sacred.utils import redact

    return redact(f"{type(exc).__name__}: {exc}")
