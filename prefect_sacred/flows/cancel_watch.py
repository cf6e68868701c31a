"""Trials of a cancelled deployment run end INTERRUPTED in their own process, with no hook named.

A served (or worker-run) flow run is cancelled by its runner: it asks the flow-run process to stop
(SIGTERM, SIGKILL 30 s later) and runs the flow's ``on_cancellation`` hooks in the serve process,
with the flow as served. The sweep's hook is attached to the flow inside the flow-run process,
when the flow maps the experiment task, so the serve process has it only if the user named it
(``@flow(on_cancellation=[train.sweep_hook])``), and Prefect's own SIGTERM handler must stay in
place for the runner's cancellation handshake. So while a process has live trials of deployment
runs, one thread (per experiment task) reads those parents' states every
:data:`POLL_SECONDS` and ends the trials of a parent gone ``CANCELLING`` or ``CANCELLED``:
``interrupted_event`` with their points and output up to then, from the process that has them.
That is well within the time the runner leaves: on its SIGTERM Prefect's thread pool waits for
the running tasks, and its SIGKILL comes 30 s later. The parent's summary artifact follows when
the parent runs here, and each trial's row as an artifact of its task run (what a ``sweep_hook``
named in the serve process lists); trials on Dask or Ray workers publish their rows as usual.

Cost: one ``read_flow_runs`` call per poll while such trials live, none otherwise; the thread
exits one poll after the last of them ended (and the process waits for it, so that an end being
recorded is not cut off). A trial's body cannot be stopped from outside (it is a
thread): it runs on, unrecorded, until it returns or the runner kills the process. A SIGKILL of
the process (OOM) leaves nothing to run here: the trials' journals are ended by the experiment's
watcher, by ``prefect-sacred sync``, or by ``sweep_hook`` named in ``on_crashed``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uuid import UUID

    from prefect_sacred.flows.tasks import TrialLifecycle, _Trial

__all__ = ["POLL_SECONDS", "CancelWatch"]

logger = logging.getLogger("prefect_sacred")

#: Seconds between two reads of the parents' states (the runner waits 30 s after its SIGTERM).
POLL_SECONDS = 1.0
#: Seconds a read of the parents' states may take.
_TIMEOUT = 10.0
_CANCELLED = ("CANCELLING", "CANCELLED")


class CancelWatch:
    """Watches the deployment-run parents of one lifecycle's live trials for cancellation."""

    def __init__(self, lifecycle: TrialLifecycle, every: float = POLL_SECONDS) -> None:
        self.lifecycle = lifecycle
        self.every = every
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the watching thread unless it runs (called when a watched trial starts)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            # Not a daemon: a process whose last trial just ended this way (the runner's SIGTERM
            # arrived) must not exit while the thread still records the end; it exits itself
            # one poll after the last watched trial ended.
            thread = threading.Thread(target=self._loop, name="prefect-sacred-cancel-watch", daemon=False)
            self._thread = thread
            thread.start()

    def _parents(self) -> set[UUID]:
        with self.lifecycle.lock:
            return {
                trial.parent
                for trial in self.lifecycle.live.values()
                if trial.cancellable and trial.parent is not None
            }

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            with self._lock:
                parents = self._parents()
                if not parents:  # a trial starting now sees no live thread and starts one
                    self._thread = None
                    return
            try:
                cancelled = _cancelled(parents)
            except Exception as exc:  # the API is away: try again at the next poll
                logger.debug("cannot read the states of flow runs %s: %s", parents, exc)
                continue
            for parent, state_name in cancelled.items():
                try:
                    self.stop_trials(parent, state_name)
                except Exception:  # the summary: the other parents' trials still get theirs
                    logger.exception("cannot summarise the trials of cancelled flow run %s", parent)

    def stop_trials(self, parent: UUID, state_name: str) -> None:
        """End the live trials of the cancelled flow run ``parent`` as INTERRUPTED."""
        from prefect_sacred.flows.sweep import publish_trial

        lifecycle = self.lifecycle
        with lifecycle.lock:
            keys = [key for key, trial in lifecycle.live.items() if trial.parent == parent]
            trials: list[_Trial] = [lifecycle.live.pop(key) for key in keys]
            here = parent in lifecycle.parents

        def end(trial: _Trial) -> None:
            run = trial.run
            try:
                run.logger.warning(
                    "Trial run %s INTERRUPTED: its parent flow run %s is %s", run._id, parent, state_name
                )
                _note_cancelled(run, state_name)
                run.interrupt("INTERRUPTED")
                lifecycle._ended(trial)  # publishes the row of a trial whose parent runs elsewhere
                if here:  # for a sweep_hook named in the serve process: it sees Prefect's states only
                    publish_trial(run)
            except Exception:
                logger.exception("cannot end trial run %s of cancelled flow run %s", run._id, parent)

        # Side by side: each end waits for its observers (up to join_timeout), all within the
        # runner's 30 s.
        enders = [threading.Thread(target=end, args=(trial,), name="prefect-sacred-end") for trial in trials]
        for ender in enders:
            ender.start()
        for ender in enders:
            ender.join()
        if trials:
            self._summarise(parent, trials[0])

    def _summarise(self, parent: UUID, trial: _Trial) -> None:
        """The parent's summary, when it runs here (its own hook will not: the runner owns it)."""
        from prefect_sacred.flows.sweep import _publish, summary_markdown

        lifecycle = self.lifecycle
        with lifecycle.lock:
            if parent not in lifecycle.parents:
                return
            rows = list(lifecycle.ended.get(parent, []))
        task_name = str((trial.run.meta_info.get("sweep") or {}).get("task_name") or "trials")
        _publish(parent, task_name, summary_markdown(task_name, rows))


def _note_cancelled(run: Any, state_name: str) -> None:
    prefect_meta = run.meta_info.get("prefect")
    if isinstance(prefect_meta, dict):
        prefect_meta["state"] = {"name": state_name, "message": "the parent flow run was cancelled"}


def _cancelled(parents: set[UUID]) -> dict[UUID, str]:
    """The parents among ``parents`` being cancelled or cancelled, with their state's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(httpx_settings={"timeout": _TIMEOUT}, sync_client=True) as client:
        ids = FlowRunFilterId(any_=list(parents))
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=ids))
    return {
        flow_run.id: str(flow_run.state.name)
        for flow_run in flow_runs
        if flow_run.state is not None and str(flow_run.state.type.value) in _CANCELLED
    }
