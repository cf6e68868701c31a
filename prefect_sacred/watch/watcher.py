"""The watcher: runs of an experiment's deployments created elsewhere, recorded QUEUED.

It subscribes to Prefect's event stream (``prefect.flow-run.Scheduled``, ``Pending``,
``Cancelled`` ...): a flow run of one of the experiment's deployments, created by the UI's Run
button, ``prefect deployment run``, a schedule or the API, is claimed (see
:func:`~prefect_sacred.flows.claims.claim_flow_run`) and recorded QUEUED with the config it will run
with (its seed is fixed on the flow run, so the run draws no other). On start, and every
``reconcile_every`` seconds, it backfills: flow runs already Scheduled or Pending are recorded
the same way (Prefect's scheduler creates a schedule's runs without emitting any event, so
only this look finds them). A queued run cancelled,
crashed or deleted before it starts is recorded INTERRUPTED.

It also finds dead runs (see :mod:`prefect_sacred.watch.liveness`): every ``liveness_every``
seconds, runs of the experiment on this machine whose process died get what their journal
holds and then FAILED, and their flow run is marked Crashed in Prefect. A run Prefect marks
Crashed (zombie detection) that no runner owns and whose journal is not here is recorded
FAILED with Prefect's message. Runs on other machines (their journal is not here) are followed
by the beat events they send (see :mod:`prefect_sacred.watch.remote`): one silent for
``max(3 beat intervals, PREFECT_SACRED_DEAD_AFTER)`` seconds (300 by default) whose flow run is
still Running is ended FAILED and its flow run marked Crashed; a run so ended that beats again
gets its flow run set Running, and its own end records its true status. Every run the watcher
ends gets its summary in the Prefect UI, as the run itself would have published it.

Cost: one websocket to the Prefect server, and per flow run of the experiment about six API
calls when it is created (claim, check, seed, label) plus one read per queued run and one
listing of the experiment's waiting flow runs every ``reconcile_every`` seconds.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import socket
import threading
import time
import typing
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect_sacred.core.fanout import ObserverFanout
from prefect_sacred.core.records import restore_value
from prefect_sacred.flows.beat_events import BEAT_EVENT
from prefect_sacred.flows.claims import QUEUED_ID_LABEL, already_claimed, claim_flow_run, release_claim
from prefect_sacred.flows.flow_runs import deployment_config
from prefect_sacred.flows.labels import RUN_ID_LABEL, ui_url
from prefect_sacred.flows.options import RunOptions
from prefect_sacred.flows.queued import record_queued
from prefect_sacred.flows.travel import FLAGS_LABEL, flag_observers
from prefect_sacred.observers.base import ResumedRun, resuming
from prefect_sacred.observers.prefect_ui.observer import with_prefect_ui
from prefect_sacred.observers.registry import ObserverConfigError
from prefect_sacred.prefect_client import sync_client
from prefect_sacred.serialization import utcnow
from prefect_sacred.watch.liveness import DeadRunFinder
from prefect_sacred.watch.remote import Heard, RemoteBeats, silence_limit

if typing.TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import FlowRun

    from prefect_sacred.flows.experiment_like import ExperimentLike

__all__ = ["Watcher"]

logger = logging.getLogger("prefect_sacred.watch")

_QUEUED_EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.Pending", "prefect.flow-run.Late")
_END_EVENTS = ("prefect.flow-run.Cancelled", "prefect.flow-run.Cancelling", "prefect.flow-run.Crashed")
_WAITING = {"SCHEDULED", "PENDING"}
#: Seconds a dead served or worker run is left to its runner's hook before the watcher ends it.
RUNNER_GRACE = 30.0
_ENDED_BEFORE_START = {"CANCELLED", "CANCELLING", "CRASHED", "FAILED"}
#: In the message of a Crashed state a watcher set.
_WATCHER_MARK = "found by prefect-sacred's watcher"


class Watcher:
    """Records runs of ``experiment``'s deployments QUEUED as soon as they are created.

    Args:
        experiment: The experiment whose flow's runs are watched; its observers (from code and
            ``PREFECT_SACRED_OBSERVERS``) record them.
        reconcile_every: Seconds between checks of the queued runs it knows of (cancelled or
            deleted ones become INTERRUPTED).
        liveness_every: Seconds between looks for dead runs (0: never).
        dead_after: The least silence (seconds) that ends a run on another machine (default:
            ``PREFECT_SACRED_DEAD_AFTER``, else 300); it is never less than 3 beat intervals.

    Example:
        ```python
        Watcher(ex).start()       # a daemon thread; ex.serve("train") starts one itself
        ```
    """

    def __init__(
        self,
        experiment: ExperimentLike,
        reconcile_every: float = 5.0,
        liveness_every: float = 1.0,
        dead_after: float | None = None,
    ) -> None:
        self.experiment = experiment
        self.liveness_every = liveness_every
        self.dead_runs = DeadRunFinder(experiment.name, defer=self._runner_owns, resume=self._resuming)
        #: The last beat of each run of the experiment on another machine.
        self.remote = RemoteBeats(dead_after)
        self._dead_since: dict[str, float] = {}
        self.reconcile_every = reconcile_every
        #: Flow runs recorded QUEUED and not yet started: flow-run id -> queued ``_id``.
        self.queued: dict[UUID, Any] = {}
        #: The observer-flags label of queued flow runs that have one (see ``watch.travel``).
        self._travelled: dict[UUID, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        """Watch in a daemon thread; returns it."""
        self._thread = threading.Thread(target=self.run, name="prefect-sacred-watcher", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask the watching thread to stop (within about a second)."""
        self._stop.set()

    def run(self) -> None:
        """Watch until :meth:`stop` (or forever): backfill, then follow the event stream."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        await asyncio.to_thread(self._guarded, self.backfill)
        reconciler = asyncio.create_task(self._reconcile_loop())
        reaper = asyncio.create_task(self._liveness_loop()) if self.liveness_every > 0 else None
        try:
            while not self._stop.is_set():
                try:
                    await self._follow()
                except Exception as exc:  # the server restarted or went away: back off, backfill
                    self.remote.disconnected()  # beats sent meanwhile are not heard: no silence counts
                    logger.warning("event stream lost (%s: %s); reconnecting", type(exc).__name__, exc)
                    await asyncio.sleep(2.0)
                    await asyncio.to_thread(self._guarded, self.backfill)
        finally:
            reconciler.cancel()
            if reaper is not None:
                reaper.cancel()

    async def _follow(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        names = [*_QUEUED_EVENTS, *_END_EVENTS, BEAT_EVENT]
        flt = EventFilter(event=EventNameFilter(name=names))
        async with get_events_subscriber(filter=flt, reconnect_on_clean_close=True) as subscriber:
            self.remote.connected()
            iterator = subscriber.__aiter__()
            while not self._stop.is_set():
                try:
                    event = await asyncio.wait_for(iterator.__anext__(), timeout=1.0)
                except TimeoutError:
                    continue
                if event.event == BEAT_EVENT:
                    payload = dict(event.payload or {})
                    if payload.get("flow") == self.experiment.name and (
                        revived := self.remote.heard(payload)
                    ):
                        await asyncio.to_thread(self._guarded, self.revive, revived)
                    continue
                if not self._ours(event):
                    continue
                flow_run_id = _flow_run_id(event.resource.id)
                if flow_run_id is None:
                    continue
                if event.event in _QUEUED_EVENTS:
                    await asyncio.to_thread(self._guarded, self.consider, flow_run_id)
                elif event.event == "prefect.flow-run.Crashed":
                    await asyncio.to_thread(self._guarded, self.crashed, flow_run_id)
                else:
                    await asyncio.to_thread(self._guarded, self.check, flow_run_id)

    def _ours(self, event: Any) -> bool:
        for related in event.related:
            if related.get("prefect.resource.role") == "flow":
                return bool(related.get("prefect.resource.name") == self.experiment.name)
        return False

    async def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.reconcile_every)
            await asyncio.to_thread(self._guarded, self.reconcile)
            # Prefect's scheduler inserts a schedule's runs without any event: only a look finds them.
            await asyncio.to_thread(self._guarded, self.backfill)

    async def _liveness_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.liveness_every)
            await asyncio.to_thread(self._guarded, self.end_dead_runs)
            await asyncio.to_thread(self._guarded, self.end_silent_runs)

    def _guarded(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:  # one flow run's trouble must not stop the watching
            logger.error(
                "watcher: %s failed: %s: %s", getattr(action, "__name__", action), type(exc).__name__, exc
            )

    # --- what it does, each callable on its own ---------------------------------------------

    def backfill(self) -> None:
        """Record the experiment's deployment runs already waiting (Scheduled or Pending)."""
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        with sync_client() as client:
            waiting = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[self.experiment.name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,  # the soonest first, when there are more
                limit=200,
            )
        for flow_run in waiting:
            self._guarded(self._consider_run, flow_run)

    def consider(self, flow_run_id: UUID) -> None:
        """Record flow run ``flow_run_id`` QUEUED if it waits, is a deployment's and nobody has."""
        with sync_client() as client:
            flow_run = client.read_flow_run(flow_run_id)
        self._consider_run(flow_run)

    def _consider_run(self, flow_run: FlowRun) -> None:
        labels = flow_run.labels or {}
        if QUEUED_ID_LABEL in labels and RUN_ID_LABEL not in labels:
            with self._lock:  # queued by someone else: still ours to end if it is cancelled
                self.queued.setdefault(flow_run.id, labels[QUEUED_ID_LABEL])
                if labels.get(FLAGS_LABEL):  # and its flags' observers, should it be deleted
                    self._travelled[flow_run.id] = labels[FLAGS_LABEL]
        if (
            flow_run.deployment_id is None
            or _state_type(flow_run) not in _WAITING
            or already_claimed(flow_run)
        ):
            return
        if not claim_flow_run(flow_run.id):
            return
        try:
            flow_run = self._fix_seed(flow_run)
            deployment = self._deployment_name(flow_run)
            prepared = deployment_config(self.experiment, flow_run.parameters)
            queued = record_queued(self.experiment, flow_run, RunOptions(), None, prepared, deployment)
        finally:
            release_claim(flow_run.id)
        with self._lock:
            self.queued[flow_run.id] = queued._id
        logger.info("flow run %s (%s) recorded as queued run %s", flow_run.name, deployment, queued._id)

    def _fix_seed(self, flow_run: FlowRun) -> FlowRun:
        """Give the flow run its seed now, so the config recorded is the one it runs with."""
        from prefect_sacred.config.captured import new_seed

        parameters = dict(flow_run.parameters or {})
        if "seed" not in self.experiment.flow.parameters.properties or parameters.get("seed") is not None:
            return flow_run
        parameters["seed"] = new_seed()
        with sync_client() as client:
            client.update_flow_run(flow_run.id, parameters=parameters)
            return client.read_flow_run(flow_run.id)

    def _deployment_name(self, flow_run: FlowRun) -> str:
        try:
            with sync_client() as client:
                assert flow_run.deployment_id is not None
                return f"{self.experiment.name}/{client.read_deployment(flow_run.deployment_id).name}"
        except Exception:
            return self.experiment.name

    def check(self, flow_run_id: UUID) -> None:
        """End the queued record of ``flow_run_id`` if it was cancelled, crashed or deleted unstarted."""
        from prefect.exceptions import ObjectNotFound

        with self._lock:
            known = flow_run_id in self.queued
        try:
            with sync_client() as client:
                flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            if known:
                self._interrupt(
                    flow_run_id, self.queued[flow_run_id], "its flow run was deleted before it started"
                )
            return
        labels = flow_run.labels or {}
        if QUEUED_ID_LABEL not in labels:
            return
        if RUN_ID_LABEL in labels or _state_type(flow_run) not in _ENDED_BEFORE_START | _WAITING:
            with self._lock:  # it started: the run's own hooks record it from now on
                self.queued.pop(flow_run_id, None)
                self._travelled.pop(flow_run_id, None)
            return
        if _state_type(flow_run) in _ENDED_BEFORE_START:
            state = flow_run.state
            why = f"{state.name if state else 'Cancelled'} before it started"
            self._interrupt(flow_run_id, labels[QUEUED_ID_LABEL], why, labels)

    def end_dead_runs(self) -> None:
        """End the runs on this machine whose process died, and say so to Prefect."""
        for identity, report in self.dead_runs.check():
            self._dead_since.pop(str(identity.get("flow_run_id")), None)
            if report.ended and identity.get("flow_run_id"):
                _mark_crashed(identity["flow_run_id"], identity.get("pid"))

    def _runner_owns(self, identity: dict[str, Any]) -> bool:
        """Whether a serve process or worker should record this dead run's end (for a while).

        Their hook knows how it ended (cancelled: INTERRUPTED); after ``RUNNER_GRACE`` seconds
        the watcher ends it all the same, in case the runner died too.
        """
        from uuid import UUID

        flow_run_id = identity.get("flow_run_id")
        if not flow_run_id:
            return False
        first = self._dead_since.setdefault(flow_run_id, time.monotonic())
        if time.monotonic() - first > RUNNER_GRACE:
            return False
        try:
            with sync_client() as client:
                flow_run = client.read_flow_run(UUID(flow_run_id))
        except Exception:  # Prefect away: a plain run is ended regardless
            return False
        return flow_run.deployment_id is not None

    def crashed(self, flow_run_id: UUID) -> None:
        """A flow run Prefect marked Crashed: end its run if no runner hook or journal here will."""
        from prefect_sacred.core.journal import RunJournal

        with sync_client() as client:
            flow_run = client.read_flow_run(flow_run_id)
        labels = flow_run.labels or {}
        if RUN_ID_LABEL not in labels:
            self.check(flow_run_id)  # crashed while queued
            return
        if flow_run.deployment_id is not None:  # its serve process or worker runs on_crashed
            return
        if RunJournal.find(str(flow_run_id)) is not None:
            self.end_dead_runs()  # the lock decides: a live process is never ended
            return
        run_id = labels[RUN_ID_LABEL]
        state = flow_run.state
        message = state.message if state is not None and state.message else "no message"
        if _WATCHER_MARK in message:  # this watcher's (or another's) doing: its run is ended
            return
        trace = [f"Prefect marked flow run {flow_run.name} ({flow_run_id}) Crashed: {message}\n"]
        self._end_elsewhere(flow_run, run_id, self.experiment.name, trace)

    def end_silent_runs(self) -> None:
        """End the runs on other machines silent for longer than their limit."""
        for heard, silence in self.remote.silent():
            self._guarded(self._end_silent, heard, silence)

    def _end_silent(self, heard: Heard, silence: float) -> None:
        from uuid import UUID

        from prefect.exceptions import ObjectNotFound

        payload = heard.payload
        try:
            with sync_client() as client:
                flow_run = client.read_flow_run(UUID(str(payload.get("flow_run_id"))))
        except ObjectNotFound:
            self.remote.forget(heard)
            return
        if _state_type(flow_run) != "RUNNING":  # it ended, and Prefect (or its runner) knows how
            self.remote.forget(heard)
            return
        interval = float(payload.get("interval") or 0.0)
        limit = silence_limit(interval, self.remote.floor)
        why = (
            f"no heartbeat from host {payload.get('host')} pid {payload.get('pid')} for {silence:.0f} s "
            f"(it beat every {interval:g} s; a run silent for {limit:.0f} s is taken for dead)"
        )
        trace = [f"{why}: recorded as FAILED by prefect-sacred's watcher on {socket.gethostname()}\n"]
        name = str(payload.get("experiment") or self.experiment.name)
        ended = self._end_elsewhere(flow_run, restore_value(payload.get("run_id")), name, trace)
        self.remote.ended(heard)
        # A trial (an experiment task, maybe on a Dask worker) going silent says nothing of its flow run.
        if ended and payload.get("key") == payload.get("flow_run_id"):
            _mark_crashed(str(flow_run.id), payload.get("pid"), f"{why}; {_WATCHER_MARK}")

    def revive(self, heard: Heard) -> None:
        """A run this watcher ended as dead beats again: its flow run is Running again."""
        from uuid import UUID

        from prefect.states import Running

        payload = heard.payload
        logger.warning(
            "run %s on host %s (pid %s) beats again after it was ended as dead; its own end will be recorded",
            restore_value(payload.get("run_id")),
            payload.get("host"),
            payload.get("pid"),
        )
        with sync_client() as client:
            flow_run = client.read_flow_run(UUID(str(payload.get("flow_run_id"))))
            state = flow_run.state
            if state is not None and state.name == "Crashed" and _WATCHER_MARK in (state.message or ""):
                client.set_flow_run_state(flow_run.id, Running(), force=True)

    def _end_elsewhere(self, flow_run: FlowRun, run_id: Any, experiment: str, trace: list[str]) -> bool:
        """Record run ``run_id`` FAILED in every observer that has it unfinished; True if one had.

        The observers are built here from code and settings, the Prefect UI's among them, which
        takes over the artifacts the run published and adds its summary.
        """
        copies = [copy.copy(observer) for observer in self.experiment._observers_for_deployment()]
        observers = with_prefect_ui(copies)
        with resuming(_resumed_run(flow_run, experiment)):
            fanout = ObserverFanout.resumed(observers, run_id, logging.LoggerAdapter(logger, {}))
            fanout.failed_event(fail_time=utcnow(), fail_trace=trace)
            fanout.join()
        if fanout.started:
            logger.info("run %s: FAILED (%s)", run_id, trace[0].strip())
        return bool(fanout.started)

    def _resuming(self, identity: dict[str, Any]) -> AbstractContextManager[Any]:
        """Where the journal of a dead run here is delivered: as the run's, for the Prefect UI."""
        from uuid import UUID

        try:
            with sync_client() as client:
                flow_run = client.read_flow_run(UUID(str(identity.get("flow_run_id"))))
        except Exception:  # no flow run, or Prefect away: delivered all the same, without summary
            return nullcontext()
        return resuming(_resumed_run(flow_run, str(identity.get("experiment") or self.experiment.name)))

    def reconcile(self) -> None:
        """Check every queued run this watcher knows of."""
        with self._lock:
            known = list(self.queued)
        for flow_run_id in known:
            self._guarded(self.check, flow_run_id)

    def _interrupt(
        self, flow_run_id: UUID, run_id: Any, why: str, labels: Mapping[str, Any] | None = None
    ) -> None:
        with self._lock:
            self.queued.pop(flow_run_id, None)
            travelled = self._travelled.pop(flow_run_id, None)
        if run_id in (None, ""):
            return
        observers = [copy.copy(observer) for observer in self.experiment._observers_for_deployment()]
        try:  # a run queued with observer flags was recorded QUEUED there too
            observers += flag_observers(labels if labels is not None else {FLAGS_LABEL: travelled}, observers)
        except ObserverConfigError as exc:
            logger.error("queued run %s: its observer flags cannot be used: %s", run_id, exc)
        log = logging.LoggerAdapter(logger, {})
        fanout = ObserverFanout.resumed(observers, run_id, log)
        fanout.interrupted_event(interrupt_time=utcnow(), status="INTERRUPTED")
        fanout.join()
        if fanout.started:
            logger.info("queued run %s: INTERRUPTED (%s)", run_id, why)


def _mark_crashed(flow_run_id: str, pid: Any, message: str | None = None) -> None:
    """Tell Prefect the flow run of a dead process crashed (it would show Running forever)."""
    from uuid import UUID

    from prefect.states import Crashed

    try:
        with sync_client() as client:
            flow_run = client.read_flow_run(UUID(flow_run_id))
            if _state_type(flow_run) == "RUNNING":
                message = message or f"its process (pid {pid}) died; {_WATCHER_MARK}"
                client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
    except Exception as exc:
        logger.warning("could not mark flow run %s crashed: %s", flow_run_id, exc)


def _resumed_run(flow_run: FlowRun, experiment: str) -> ResumedRun:
    start = flow_run.start_time
    if start is not None and start.tzinfo is not None:
        start = start.astimezone(dt.UTC).replace(tzinfo=None)
    return ResumedRun(
        flow_name=experiment,
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        ui_url=ui_url(flow_run.id),
        parameters=dict(flow_run.parameters or {}),
        start_time=start,
    )


def _flow_run_id(resource_id: str) -> UUID | None:
    from uuid import UUID

    try:
        return UUID(resource_id.rsplit(".", 1)[-1])
    except ValueError:
        return None


def _state_type(flow_run: FlowRun) -> str | None:
    state = flow_run.state
    return str(state.type.value) if state is not None else None
