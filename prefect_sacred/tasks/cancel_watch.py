"""Trials of a cancelled deployment run end INTERRUPTED in their own process, with no hook named.

A served (or worker-run) flow run is cancelled by its runner: it asks the flow-run process to stop
(SIGTERM, SIGKILL 30 s later) and runs the flow's ``on_cancellation`` hooks in the serve process,
with the flow as served. The sweep's hook is attached to the flow inside the flow-run process,
when the flow maps the experiment task, so the serve process has it only if the user named it
(``@flow(on_cancellation=[train.sweep_hook])``), and Prefect's own SIGTERM handler must stay in
place for the runner's cancellation handshake. So while a process has live trials of deployment
runs, one thread per ``ex.task()`` (per lifecycle token: on Dask or Ray each trial unpickles a
lifecycle of its own, and they all share it) reads those parents' states every
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
from typing import TYPE_CHECKING, Any, Protocol

from prefect_sacred.prefect_client import sync_client
from prefect_sacred.tasks.summary import publish_summary, publish_trial, summary_markdown

if TYPE_CHECKING:
    from uuid import UUID

    from prefect_sacred.tasks.trial_run import Trial

__all__ = ["POLL_SECONDS", "CancelWatch", "WatchedTrials"]

logger = logging.getLogger("prefect_sacred")

#: Seconds between two reads of the parents' states (the runner waits 30 s after its SIGTERM).
POLL_SECONDS = 1.0
_CANCELLED = ("CANCELLING", "CANCELLED")


class WatchedTrials(Protocol):
    """The live trials of one ``ex.task()`` in this process, as the watch reads them.

    :class:`~prefect_sacred.tasks.trials.TrialLifecycle` is one; the watch never imports it
    (the lifecycle starts the watch).
    """

    #: Names the ``ex.task()`` in every process its pickled copies reach.
    token: str
    #: Guards ``live``, ``ended`` and ``parents``.
    lock: threading.Lock
    live: dict[UUID, Trial]
    ended: dict[UUID, list[dict[str, Any]]]
    parents: set[UUID]

    def trial_ended(self, trial: Trial) -> None: ...


#: The one watch of each ``ex.task()`` in this process, by its lifecycle's token. On Dask or Ray
#: every trial unpickles its own lifecycle: a watch per lifecycle would be a thread polling
#: Prefect per live trial. This registry holds watchers only (a thread and the lifecycles it reads),
#: never run state, which stays in each lifecycle: a watch leaves it when its thread exits, so it
#: holds no more entries than ``ex.task()``s with live trials of deployment runs.
_WATCHES: dict[str, CancelWatch] = {}
#: Guards ``_WATCHES`` and each watch's lifecycles and thread (taken before a lifecycle's lock).
_WATCHES_LOCK = threading.Lock()


class CancelWatch:
    """Watches the deployment-run parents of the live trials of one ``ex.task()`` for cancellation.

    Get it with :meth:`watch`: one per token and process, over every lifecycle of that token here.
    """

    def __init__(self, token: str, every: float = POLL_SECONDS) -> None:
        self.token = token
        self.every = every
        self._lifecycles: list[WatchedTrials] = []
        self._thread: threading.Thread | None = None

    @classmethod
    def watch(cls, lifecycle: WatchedTrials, every: float = POLL_SECONDS) -> CancelWatch:
        """Watch ``lifecycle``'s trials with its ``ex.task()``'s watch (called when one starts).

        Starts the watch's thread unless it runs.
        """
        with _WATCHES_LOCK:
            watch = _WATCHES.get(lifecycle.token)
            if watch is None:
                watch = _WATCHES[lifecycle.token] = cls(lifecycle.token, every)
            if not any(each is lifecycle for each in watch._lifecycles):
                watch._lifecycles.append(lifecycle)
            if watch._thread is None:
                # Not a daemon: a process whose last trial just ended this way (the runner's SIGTERM
                # arrived) must not exit while the thread still records the end; it exits itself
                # one poll after the last watched trial ended.
                name = f"prefect-sacred-cancel-watch-{lifecycle.token[:8]}"
                watch._thread = threading.Thread(target=watch._loop, name=name, daemon=False)
                watch._thread.start()
        return watch

    @property
    def running(self) -> bool:
        """Whether the watching thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _watched(self) -> tuple[set[UUID], list[WatchedTrials]]:
        """The parents to read, and the lifecycles with trials of them (the others are dropped)."""
        parents: set[UUID] = set()
        kept = []
        for lifecycle in self._lifecycles:
            with lifecycle.lock:
                theirs = {
                    trial.parent
                    for trial in lifecycle.live.values()
                    if trial.cancellable and trial.parent is not None
                }
            if theirs:
                parents |= theirs
                kept.append(lifecycle)
        self._lifecycles = kept
        return parents, list(kept)

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            with _WATCHES_LOCK:
                parents, lifecycles = self._watched()
                if not parents:  # a trial starting now finds no watch and starts another
                    self._thread = None
                    if _WATCHES.get(self.token) is self:
                        del _WATCHES[self.token]
                    return
            try:
                cancelled = _cancelled(parents)
            except Exception as exc:  # the API is away: try again at the next poll
                logger.debug("cannot read the states of flow runs %s: %s", parents, exc)
                continue
            for parent, state_name in cancelled.items():
                try:
                    self.stop_trials(parent, state_name, lifecycles)
                except Exception:  # the summary: the other parents' trials still get theirs
                    logger.exception("cannot summarise the trials of cancelled flow run %s", parent)

    def stop_trials(self, parent: UUID, state_name: str, lifecycles: list[WatchedTrials]) -> None:
        """End the live trials of the cancelled flow run ``parent`` in ``lifecycles`` as INTERRUPTED."""
        taken: list[tuple[WatchedTrials, Trial, bool]] = []
        for lifecycle in lifecycles:
            with lifecycle.lock:
                keys = [key for key, trial in lifecycle.live.items() if trial.parent == parent]
                here = parent in lifecycle.parents
                taken += [(lifecycle, lifecycle.live.pop(key), here) for key in keys]

        def end(lifecycle: WatchedTrials, trial: Trial, here: bool) -> None:
            run = trial.run
            try:
                run.logger.warning(
                    "Trial run %s INTERRUPTED: its parent flow run %s is %s", run._id, parent, state_name
                )
                _note_cancelled(run, state_name)
                run.interrupt("INTERRUPTED")
                lifecycle.trial_ended(trial)  # publishes the row of a trial whose parent runs elsewhere
                if here:  # for a sweep_hook named in the serve process: it sees Prefect's states only
                    publish_trial(run)
            except Exception:
                logger.exception("cannot end trial run %s of cancelled flow run %s", run._id, parent)

        # Side by side, whichever lifecycle holds them: each end waits for its observers (up to
        # join_timeout), all within the runner's 30 s.
        enders = [threading.Thread(target=end, args=each, name="prefect-sacred-end") for each in taken]
        for ender in enders:
            ender.start()
        for ender in enders:
            ender.join()
        summarised: list[WatchedTrials] = []
        for lifecycle, trial, _ in taken:
            if not any(each is lifecycle for each in summarised):
                summarised.append(lifecycle)
                self._summarise(lifecycle, parent, trial)

    def _summarise(self, lifecycle: WatchedTrials, parent: UUID, trial: Trial) -> None:
        """The parent's summary, when it runs here (its own hook will not: the runner owns it)."""
        with lifecycle.lock:
            if parent not in lifecycle.parents:
                return
            rows = list(lifecycle.ended.get(parent, []))
        task_name = str((trial.run.meta_info.get("sweep") or {}).get("task_name") or "trials")
        publish_summary(parent, task_name, summary_markdown(task_name, rows))


def _note_cancelled(run: Any, state_name: str) -> None:
    prefect_meta = run.meta_info.get("prefect")
    if isinstance(prefect_meta, dict):
        prefect_meta["state"] = {"name": state_name, "message": "the parent flow run was cancelled"}


def _cancelled(parents: set[UUID]) -> dict[UUID, str]:
    """The parents among ``parents`` being cancelled or cancelled, with their state's name."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with sync_client() as client:
        ids = FlowRunFilterId(any_=list(parents))
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=ids))
    return {
        flow_run.id: str(flow_run.state.name)
        for flow_run in flow_runs
        if flow_run.state is not None and str(flow_run.state.type.value) in _CANCELLED
    }
