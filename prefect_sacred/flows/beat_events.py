"""A run's beats as Prefect events, so a watcher on another machine knows the run lives.

Each beat of a run in a flow run hands one small event, :data:`BEAT_EVENT`, to a
:class:`BeatSender`; the watcher (:mod:`prefect_sacred.watch.remote`) keeps the time of each
run's last beat and ends a run silent for too long.

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
import uuid
from typing import TYPE_CHECKING, Any

from prefect_sacred.core.records import encode_value
from prefect_sacred.prefect_client import close_client, open_client
from prefect_sacred.utils import redact

if TYPE_CHECKING:
    from prefect_sacred.core.run import Run

__all__ = ["BEAT_EVENT", "BEAT_EVENTS_ENV_VAR", "BeatSender", "beat_events_enabled", "beat_sender_for"]

logger = logging.getLogger("prefect_sacred.watch")

#: The event a run sends to Prefect at each beat.
BEAT_EVENT = "prefect-sacred.run.heartbeat"
#: ``off`` (or ``0``, ``false``, ``no``) sends no beat events.
BEAT_EVENTS_ENV_VAR = "PREFECT_SACRED_BEAT_EVENTS"


def beat_events_enabled() -> bool:
    """Whether runs send a Prefect event per beat (``PREFECT_SACRED_BEAT_EVENTS`` not off)."""
    return os.environ.get(BEAT_EVENTS_ENV_VAR, "").strip().lower() not in {"0", "off", "false", "no"}


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


def beat_sender_for(run: Run) -> BeatSender | None:
    """A sender of the started ``run``'s beats as Prefect events, or None when no watcher could hear them.

    None for a run outside a flow run, with beat events off or no Prefect API set. A run that
    keeps a journal is known to a watcher on its machine by the journal's lock; the events are
    for watchers elsewhere.
    """
    from prefect.settings import PREFECT_API_URL

    prefect_meta = run.meta_info.get("prefect")
    if not isinstance(prefect_meta, dict) or not prefect_meta.get("flow_run_id"):
        return None
    if not beat_events_enabled() or not PREFECT_API_URL.value():  # no server to hear them
        return None
    experiment = run.experiment_info.get("name")
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
                "run_id": encode_value(run._id),
                "experiment": experiment,
                "flow_run_id": prefect_meta["flow_run_id"],
                "flow_run_name": prefect_meta.get("flow_run_name"),
                "interval": run.beat_interval,
                "journal": run.journal_path is not None,
            }
        )
    except Exception as exc:  # liveness events are a nicety: never a reason to fail the run
        run.logger.warning("run %s sends no beat events: %s: %s", run._id, type(exc).__name__, exc)
        return None


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")
