"""Prefect flow-run states mapped onto Sacred's events.

| Prefect                                   | event                                   | status      |
|-------------------------------------------|-----------------------------------------|-------------|
| on_running (first attempt only)           | started_event                           | RUNNING     |
| on_completion                             | completed_event(stop_time, result)      | COMPLETED   |
| on_failure                                | failed_event(fail_time, fail_trace)     | FAILED      |
| on_failure, state TimedOut                | interrupted_event(status="TIMEOUT")     | TIMEOUT     |
| on_crashed: KeyboardInterrupt, SIGTERM    | interrupted_event(status="INTERRUPTED") | INTERRUPTED |
| on_crashed: sys.exit, other crashes       | failed_event                            | FAILED      |
| on_cancellation                           | interrupted_event(status="INTERRUPTED") | INTERRUPTED |

Cancellation of a served run, and a SIGKILL of its process, run the hook in the serve process,
which never saw the run: there the observers are rebuilt from the experiment module and the
environment, and the run's ``_id`` is read back from the flow run's labels.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect.exceptions import TerminationSignal

from prefect_sacred.core.fanout import ObserverFanout
from prefect_sacred.core.journal import RunJournal
from prefect_sacred.core.run import Run
from prefect_sacred.core.sync import sync_journal
from prefect_sacred.flows.labels import label_run_id, read_run_id, ui_url
from prefect_sacred.observers.base import ResumedRun, resuming
from prefect_sacred.serialization import utcnow

if TYPE_CHECKING:
    from uuid import UUID

    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State

    from prefect_sacred.observers.base import ObserverLike

__all__ = ["RunLifecycle"]

_INTERRUPTS = (KeyboardInterrupt, TerminationSignal)


class RunLifecycle:
    """The five flow hooks of one experiment, and the runs they keep alive in this process.

    Runs are keyed by flow-run id, so any number of runs of the experiment can overlap.

    Args:
        new_run: Builds the run of a flow run that just started (not yet started itself).
        rebuild_observers: The observers of a run started elsewhere (a served run whose
            process is gone), built from code and configuration in this process.
    """

    def __init__(
        self,
        new_run: Callable[[FlowRun], Run],
        rebuild_observers: Callable[[], list[ObserverLike]],
    ) -> None:
        self._new_run = new_run
        self._rebuild_observers = rebuild_observers
        self._live: dict[UUID, Run] = {}
        self._lock = threading.Lock()

    # Prefect's serve pickles the flow, its hooks included, into each flow-run process:
    # what travels is how to build runs, never this process's live runs or locks.
    def __getstate__(self) -> dict[str, Any]:
        return {"new_run": self._new_run, "rebuild_observers": self._rebuild_observers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["new_run"], state["rebuild_observers"])  # type: ignore[misc]

    def live_run(self, flow_run_id: UUID) -> Run | None:
        with self._lock:
            return self._live.get(flow_run_id)

    def _pop(self, flow_run_id: UUID) -> Run | None:
        with self._lock:
            return self._live.pop(flow_run_id, None)

    # Prefect calls runner-side hooks by keyword: the parameters must be named exactly so.

    def on_running(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        with self._lock:
            if flow_run.id in self._live:  # a retry: Prefect re-fires on_running per attempt
                return
            run = self._new_run(flow_run)
            self._live[flow_run.id] = run
        run.logger = _run_logger(flow, flow_run)
        run.start()
        if run.start_error is None:
            run.logger.info('Started run with ID "%s"', run._id)
            label_run_id(flow_run.id, run._id)

    def on_completion(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        run = self._pop(flow_run.id)
        if run is None:
            return
        _note_state(run, state)
        run.complete(run.result)
        self._report(flow_run, run)

    def on_failure(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        run = self._pop(flow_run.id)
        if run is None:
            return
        _note_state(run, state)
        if state.name == "TimedOut":
            run.interrupt("TIMEOUT")
        else:
            run.fail(run.fail_trace or _trace_from_state(state))
        self._report(flow_run, run)

    def on_crashed(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        run = self._pop(flow_run.id)
        if run is None:
            # The flow's process is gone (SIGKILL, OOM): this is the serve process or a worker.
            self._finish_elsewhere(flow, flow_run, state, interrupted=False)
            return
        _note_state(run, state)
        if isinstance(run.exception, _INTERRUPTS):
            run.interrupt("INTERRUPTED")
        else:  # sys.exit() and crashes of the engine itself
            run.fail(run.fail_trace or _trace_from_state(state))
        self._report(flow_run, run)

    def on_cancellation(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        run = self._pop(flow_run.id)
        if run is None:
            self._finish_elsewhere(flow, flow_run, state, interrupted=True)
            return
        _note_state(run, state)
        run.interrupt("INTERRUPTED")
        self._report(flow_run, run)

    def _report(self, flow_run: FlowRun, run: Run) -> None:
        if run.logger is not None:
            places = "; ".join(f"{name}: {where}" for name, where in run.locations())
            who = f"Run {run._id}" if run._id is not None else "The run (no observer gave it an id)"
            run.logger.info("%s %s%s", who, run.status, f" (stored by {places})" if places else "")

    def _finish_elsewhere(
        self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any], interrupted: bool
    ) -> None:
        """Record the end of a run whose process is gone, from the process running this hook."""
        log = _run_logger(flow, flow_run)
        try:
            started, run_id = read_run_id(flow_run.id)
        except Exception as exc:
            log.error("cannot read the run id of flow run %s: %s", flow_run.id, exc)
            return
        if not started:
            log.warning("flow run %s started no experiment run; nothing to record", flow_run.id)
            return
        try:
            observers = self._rebuild_observers()
        except Exception as exc:  # the journal may still hold the observers themselves
            log.error("cannot rebuild the observers of run %s: %s", run_id, exc)
            observers = []
        with resuming(_resumed_run(flow, flow_run)):
            if _deliver_journal(flow_run, state, interrupted, log, observers):
                return
            fanout = ObserverFanout.resumed(observers, run_id, log)
            now = utcnow()
            if interrupted:
                fanout.interrupted_event(interrupt_time=now, status="INTERRUPTED")
            else:
                fanout.failed_event(fail_time=now, fail_trace=_trace_from_state(state))
            fanout.join()
        for observer in fanout.started:
            name = type(observer).__name__
            log.info("observer %s recorded the end of run %s (%s)", name, run_id, state.name)


def _deliver_journal(
    flow_run: FlowRun,
    state: State[Any],
    interrupted: bool,
    log: logging.LoggerAdapter[Any],
    rebuilt: list[ObserverLike],
) -> bool:
    """Deliver the dead run's journal, if this machine has it, then its end; True if done.

    The journal holds what the run's observers had not received (metric points and output up
    to about a second before the end) and the observers themselves, with their cursors.
    """
    path = RunJournal.find(str(flow_run.id))
    if path is None:
        return False
    status = "INTERRUPTED" if interrupted else "FAILED"
    # The cancelled process may still be writing its own end: give it time to let go.
    try:
        report = sync_journal(
            path, status=status, fail_trace=_trace_from_state(state), wait=15.0, rebuilt=list(rebuilt)
        )
    except Exception as exc:
        log.error("cannot deliver the journal %s: %s: %s", path, type(exc).__name__, exc)
        return False
    if report.skipped is not None:
        log.warning("run %s: its process still holds its journal; ending it without", report.run_id)
        return False
    for line in report.lines():
        log.info("%s", line)
    if not report.complete:
        log.error("run %s: not all delivered; run `prefect-sacred sync %s` later", report.run_id, path)
    return True


def _resumed_run(flow: Flow[Any, Any], flow_run: FlowRun) -> ResumedRun:
    start = flow_run.start_time
    if start is not None and start.tzinfo is not None:
        start = start.astimezone(dt.UTC).replace(tzinfo=None)
    return ResumedRun(
        flow_name=str(getattr(flow, "name", "") or ""),
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        ui_url=ui_url(flow_run.id),
        parameters=dict(flow_run.parameters or {}),
        start_time=start,
    )


def _note_state(run: Run, state: State[Any]) -> None:
    """Prefect's own view of the end, beside Sacred's status: in the meta, never in the user's ``info``."""
    prefect_meta = run.meta_info.get("prefect")
    if isinstance(prefect_meta, dict):
        prefect_meta["state"] = {"name": state.name, "message": state.message}


def _trace_from_state(state: State[Any]) -> list[str]:
    return [f"{state.name}: {state.message}\n"]


def _run_logger(flow: Flow[Any, Any], flow_run: FlowRun) -> logging.LoggerAdapter[Any]:
    from prefect.logging.loggers import flow_run_logger

    try:
        return flow_run_logger(flow_run, flow)
    except Exception:
        return logging.LoggerAdapter(logging.getLogger("prefect_sacred"), {})
