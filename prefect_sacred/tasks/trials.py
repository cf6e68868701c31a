"""Experiments as Prefect tasks: each task run (a trial of a sweep) is one observed run.

``ex.task(**task_options)`` returns a Prefect task whose parameters are the experiment's config
entries, like the flow's. Its hooks drive Sacred's events:

| Prefect (task run)                  | event                                   | status    |
|-------------------------------------|-----------------------------------------|-----------|
| on_running (first attempt only)     | started_event                           | RUNNING   |
| on_completion                       | completed_event(stop_time, result)      | COMPLETED |
| on_failure                          | failed_event(fail_time, fail_trace)     | FAILED    |
| on_failure, state TimedOut          | interrupted_event(status="TIMEOUT")     | TIMEOUT   |
| the parent flow cancelled/interrupted | interrupted_event                     | INTERRUPTED |
| the parent deployment run cancelled (polled, :mod:`.cancel_watch`) | interrupted_event | INTERRUPTED |
| the parent flow failed/crashed, or the trial's process died | failed_event    | FAILED    |

Tasks have no crash or cancellation hooks: the parent flow's hooks (attached when the task is
called, submitted or mapped inside it, see :mod:`prefect_sacred.tasks.sweep`) end the trials it
leaves behind and write the sweep's summary artifact. A deployment run's cancellation is run by
its runner in another process, without those hooks: the trials' own process ends them as soon
as Prefect says the parent is cancelling (see :mod:`prefect_sacred.tasks.cancel_watch`).

Captured output: trials in one process run on threads, so the default capture mode of a trial
is ``sys`` (writes to ``sys.stdout``/``sys.stderr`` routed by context: each trial gets only its
own). ``fd`` captures file descriptors 1 and 2, which every thread of the process shares: use it
only where one trial runs per process (a Dask worker with one thread) to catch C and subprocess
output too. A second concurrent ``fd`` trial falls back to ``sys`` (with a warning): it records its
own Python-level output, and its C-level and subprocess output goes to the trial holding the fds,
which records everything written to them while it runs.
"""

from __future__ import annotations

import copy
import inspect
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.exceptions import MissingContextError

from prefect_sacred.core.info import gather_host_info
from prefect_sacred.core.run import Run
from prefect_sacred.flows.beat_events import beat_sender_for
from prefect_sacred.flows.flow_runs import deployment_config, run_observers
from prefect_sacred.flows.options import RunOptions
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.flows.starting import Prepared, borrow_observers, build_meta, differs, return_observers
from prefect_sacred.observers.prefect_ui.observer import with_prefect_ui
from prefect_sacred.tasks.cancel_watch import CancelWatch
from prefect_sacred.tasks.summary import publish_trial, row_of
from prefect_sacred.tasks.trial_run import Trial, TrialRun

if TYPE_CHECKING:
    from uuid import UUID

    from prefect import Task
    from prefect.client.schemas.objects import FlowRun, State, TaskRun

    from prefect_sacred.flows.experiment_like import ExperimentLike

__all__ = ["DEFAULT_TRIAL_CAPTURE", "TrialLifecycle"]

#: A trial's default capture mode: trials share the process with other trials (threads).
DEFAULT_TRIAL_CAPTURE = "sys"
#: Experiment records gathered in this process, by the ``ex.task()`` they serve (its token).
#: On Dask or Ray each trial unpickles its own lifecycle, and gathering takes 0.1-0.2 s: a memo
#: of static facts shared by a sweep's trials in a worker (not run state). The newest few stay.
_GATHERED: dict[str, dict[str, Any]] = {}
_GATHERED_LOCK = threading.Lock()
_GATHERED_KEEP = 16


@dataclass
class TrialLifecycle:
    """The task hooks of one experiment's trials, and the trials live in this process.

    Trials are keyed by task run id, so any number of them overlap. Only how to build trials
    travels by pickling (to Dask or Ray workers): never the live trials or the lock.
    """

    experiment: ExperimentLike
    capture: str | None = None
    live: dict[UUID, Trial] = field(default_factory=dict)
    #: Summary rows of ended trials, by parent flow run (rows, not runs: their output can be big).
    ended: dict[UUID, list[dict[str, Any]]] = field(default_factory=dict)
    parents: set[UUID] = field(default_factory=set)
    shared_info: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Held while the experiment's record is gathered, so the other hooks never wait for it.
    info_lock: threading.Lock = field(default_factory=threading.Lock)
    #: The watch of this ``ex.task()``'s trials in this process, once one needed it (shared by
    #: every lifecycle of the same token here, see :mod:`.cancel_watch`).
    cancel_watch: CancelWatch | None = None
    #: Names this ``ex.task()`` in every process its pickled copies reach (see ``_GATHERED``).
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __getstate__(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "capture": self.capture, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["experiment"], state["capture"], token=state["token"])  # type: ignore[misc]

    # Prefect calls task hooks as hook(task, task_run, state).

    def on_running(self, task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> None:
        with self.lock:
            if task_run.id in self.live:  # a retry: Prefect re-fires on_running per attempt
                return
        # Built outside the lock: trials start side by side. A task run's hooks run one at a time.
        trial = self._new_trial(task, task_run)
        with self.lock:
            self.live[task_run.id] = trial
        run = trial.run
        run.logger = _task_logger(task, task_run)
        _end_dead_attempt(self.experiment, task_run, run.logger)
        run.start()
        if run.start_error is None:
            run.logger.info('Started trial run with ID "%s"', run._id)
        if trial.cancellable:  # one watch per ex.task() in this process, whichever copy of it
            self.cancel_watch = CancelWatch.watch(self)

    def on_completion(self, task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> None:
        trial = self._pop(task_run.id)
        if trial is not None:
            _note_state(trial.run, state)
            trial.run.complete(trial.run.result)
            self.trial_ended(trial)

    def on_failure(self, task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> None:
        trial = self._pop(task_run.id)
        if trial is None:
            return
        run = trial.run
        _note_state(run, state)
        if state.name == "TimedOut":
            run.interrupt("TIMEOUT")
        else:
            run.fail(run.fail_trace or [f"{state.name}: {state.message}\n"])
        self.trial_ended(trial)

    def _experiment_info(self) -> dict[str, Any]:
        """The experiment's record (sources, dependencies, git), gathered once per process.

        It takes about 0.1 s (hashing sources, asking git): every trial of a sweep shares it.
        """
        with self.info_lock:
            if self.shared_info is None:
                self.shared_info = _gathered_info(self.token, self.experiment)
            return copy.deepcopy(self.shared_info)

    def _pop(self, task_run_id: UUID) -> Trial | None:
        with self.lock:
            return self.live.pop(task_run_id, None)

    def trial_ended(self, trial: Trial) -> None:
        """Keep the finished trial for its parent's summary (only if that parent is watching here)."""
        if trial.parent is None:
            return
        with self.lock:
            watched = trial.parent in self.parents
            if watched:
                self.ended.setdefault(trial.parent, []).append(row_of(trial.run))
        if not watched:  # the parent runs in another process (Dask, Ray): tell it through Prefect
            publish_trial(trial.run)

    def take_trials(self, parent: UUID, end_live: bool) -> tuple[list[dict[str, Any]], list[TrialRun]]:
        """``(ended trials' rows, live trials)`` of the parent flow run ``parent`` in this process.

        The ended ones are forgotten; the live ones are taken from this lifecycle (for the
        parent to end them) only when ``end_live``, else they finish by themselves.
        """
        with self.lock:
            ended = self.ended.pop(parent, [])
            keys = [key for key, trial in self.live.items() if trial.parent == parent]
            live = [(self.live.pop(key) if end_live else self.live[key]).run for key in keys]
            self.parents.discard(parent)
        return ended, live

    # --- the body --------------------------------------------------------------------------

    def execute(self) -> Any:
        from prefect.context import TaskRunContext

        context = TaskRunContext.get()
        trial = self.live.get(context.task_run.id) if context is not None else None
        if trial is None:
            raise RuntimeError("the trial could not start: see the on_running hook's error above")
        run = trial.run
        if run.start_error is not None:
            raise run.start_error
        if trial.prepared.error is not None:
            raise trial.prepared.error
        assert trial.prepared.assembled is not None
        run.stop_time = run.fail_trace = run.exception = None  # a retry starts afresh
        return self.experiment._call_command(run, trial.prepared.assembled, trial.prepared.command)

    # --- building a trial ------------------------------------------------------------------

    def _new_trial(self, task: Task[Any, Any], task_run: TaskRun) -> Trial:
        from prefect.context import FlowRunContext, TaskRunContext

        ex = self.experiment
        context = TaskRunContext.get()
        parameters = _resolved(dict(context.parameters or {}) if context is not None else {})
        # The config is assembled as for a flow run given these parameters: values equal to
        # their default are not updates, so entries computed from the updated ones follow.
        prepared = deployment_config(ex, parameters)
        flow_context = FlowRunContext.get()
        parent_run = flow_context.flow_run if flow_context is not None else None
        observers, setup_error = run_observers(ex, RunOptions())
        config = prepared.assembled.config if prepared.assembled is not None else {**parameters, "seed": None}
        if config.get("seed") is None:
            from prefect_sacred.config.captured import new_seed

            config["seed"] = new_seed()
        meta = _trial_meta(task, task_run, parent_run, prepared, parameters)
        experiment_info = self._experiment_info()
        # fd capture is process-wide: trials on threads default to sys (see the module doc).
        capture = self.capture or (DEFAULT_TRIAL_CAPTURE if ex.capture_mode == "fd" else ex.capture_mode)
        run = TrialRun(
            experiment_info=experiment_info,
            host_info=gather_host_info(ex.captured_env),
            meta_info=meta,
            config=config,
            command=prepared.command,
            # The Prefect UI observer writes a flow run's artifacts: the parent's summary
            # lists the trials instead (see prefect_sacred.tasks.sweep).
            observers=with_prefect_ui(borrow_observers(observers), enabled=False),
            beat_interval=ex.beat_interval,
            capture_mode=capture,
            captured_out_filter=ex.captured_out_filter,
            join_timeout=ex.join_timeout,
            beat_events=beat_sender_for,
        )
        run.config_modifications = prepared.assembled.mods if prepared.assembled else None
        run.start_error = setup_error
        run.trial = (str(parent_run.id) if parent_run else None, str(task_run.id), task_run.name)
        run.on_finish = return_observers
        ex.last_run = run
        parent_id = parent_run.id if parent_run is not None else None
        cancellable = parent_run is not None and parent_run.deployment_id is not None
        return Trial(run, prepared, parent_id, cancellable)


def _trial_meta(
    task: Task[Any, Any],
    task_run: TaskRun,
    parent: FlowRun | None,
    prepared: Prepared,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """Sacred's meta of a flow run's, plus the task run and the sweep the trial belongs to."""
    if parent is not None:
        meta = build_meta(parent, RunOptions(), None, prepared)
    else:
        meta = {"command": prepared.command, "options": {}, "named_configs": [], "prefect": {}}
    defaults = {name: parameter.default for name, parameter in inspect.signature(task.fn).parameters.items()}
    # Prefect fills in every default: only values that differ were given (as the UI's form).
    meta["config_updates"] = {
        key: value
        for key, value in parameters.items()
        if key != NAMED_CONFIGS_PARAMETER
        and not (key == "seed" and value is None)
        and (key not in defaults or differs(value, defaults[key]))
    }
    prefect_meta = meta.setdefault("prefect", {})
    prefect_meta.update(task_run_id=str(task_run.id), task_run_name=task_run.name, task_name=task.name)
    # Readers group the trials of one sweep by this: the parent flow run and the task.
    meta["sweep"] = {
        "id": f"{parent.id if parent is not None else task_run.id}/{task.name}",
        "flow_run_id": str(parent.id) if parent is not None else None,
        "flow_run_name": parent.name if parent is not None else None,
        "task_name": task.name,
    }
    return meta


def _resolved(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters with upstream futures and states replaced by their results (as the body gets them)."""
    from prefect.utilities.collections import visit_collection
    from prefect.utilities.engine import resolve_to_final_result

    return {
        key: visit_collection(
            value,
            visit_fn=resolve_to_final_result,
            return_data=True,
            max_depth=-1,
            remove_annotations=True,
            context={"parameter_name": key},
        )
        for key, value in parameters.items()
    }


def _gathered_info(token: str, experiment: ExperimentLike) -> dict[str, Any]:
    """The experiment's record for the ``ex.task()`` named ``token``, gathered once per process."""
    with _GATHERED_LOCK:
        info = _GATHERED.get(token)
        if info is None:
            info = experiment.experiment_info()
            info["name"] = experiment.name or "experiment"
            _GATHERED[token] = info
            while len(_GATHERED) > _GATHERED_KEEP:
                _GATHERED.pop(next(iter(_GATHERED)))
        return info


def _end_dead_attempt(experiment: ExperimentLike, task_run: TaskRun, log: Any) -> None:
    """End the record of an earlier attempt of this task run whose process died on this machine.

    Ray reruns a task whose worker died (``max_retries``, 3 by default), as Dask does
    (``distributed.scheduler.allowed-failures``): the same task run starts again in another
    process, and the dead attempt's record would stay RUNNING. Its journal ends it ``FAILED``.
    """
    from prefect_sacred.core.journal import RunJournal
    from prefect_sacred.core.sync import sync_journal

    path = RunJournal.find(str(task_run.id))
    if path is None:  # the usual case: a first attempt
        return
    trace = [
        f"the trial's process died before it ended; the task runner ran task run {task_run.name} again\n"
    ]
    try:
        observers = experiment._observers_for_deployment()
    except Exception:
        observers = []
    try:
        report = sync_journal(path, status="FAILED", fail_trace=trace, rebuilt=observers)
    except Exception as exc:
        log.warning("cannot end the dead attempt's journal %s: %s: %s", path, type(exc).__name__, exc)
        return
    if report.skipped is None:  # else its process is alive: it ends its record itself
        for line in report.lines():
            log.info("%s", line)


def _note_state(run: Run, state: State[Any]) -> None:
    prefect_meta = run.meta_info.get("prefect")
    if isinstance(prefect_meta, dict):
        prefect_meta["state"] = {"name": state.name, "message": state.message}


def _task_logger(task: Task[Any, Any], task_run: TaskRun) -> Any:
    import logging

    from prefect.logging.loggers import task_run_logger

    try:
        return task_run_logger(task_run, task)
    except (MissingContextError, Exception):
        return logging.LoggerAdapter(logging.getLogger("prefect_sacred"), {})
