"""``ex.task()``: the experiment's main function as a Prefect task, each task run an observed trial.

See :mod:`prefect_sacred.tasks.trials` for how a trial's events map to Prefect's task hooks,
and :mod:`prefect_sacred.tasks.sweep` for what the parent flow does at its end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import Task

from prefect_sacred.core.capture import CAPTURE_MODES
from prefect_sacred.tasks.sweep import SweepHook, watch_parent
from prefect_sacred.tasks.trial_run import trial_key
from prefect_sacred.tasks.trials import TrialLifecycle

if TYPE_CHECKING:
    from prefect_sacred.flows.experiment_like import ExperimentLike

__all__ = ["ExperimentTask", "experiment_task"]


class ExperimentTask(Task):  # type: ignore[type-arg]
    """The Prefect task of an experiment (see :func:`experiment_task`).

    Calling, submitting or mapping it inside a flow attaches the sweep's hooks to that flow,
    so the flow's end finishes the trials it leaves behind and writes the sweep's summary.
    """

    @property
    def sweep_hook(self) -> Any:
        """The parent flow's hook for these trials, to name in a flow's hooks explicitly.

        For ends run in another process than the flow's body: a served run whose process was
        SIGKILLed (``@flow(on_crashed=[train.sweep_hook])``: the serve process ends its trials
        FAILED from their journals). A cancelled deployment run needs no hook named (its trials
        end themselves, see :mod:`prefect_sacred.tasks.cancel_watch`); naming it in
        ``on_cancellation`` as well ends no trial twice.
        """
        lifecycle = _lifecycle_of(self)
        if lifecycle is None:
            raise RuntimeError(f"task {self.name!r} is not an experiment's task")
        return SweepHook(lifecycle, self.name)

    def _watching_parent(self) -> None:
        lifecycle = _lifecycle_of(self)
        if lifecycle is not None:
            watch_parent(self, lifecycle)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._watching_parent()
        return super().__call__(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self._watching_parent()
        return super().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        self._watching_parent()
        return super().map(*args, **kwargs)

    def with_options(self, *args: Any, **kwargs: Any) -> Any:
        copied = super().with_options(*args, **kwargs)
        copied.__class__ = ExperimentTask  # Prefect builds a plain Task: keep watching parents
        copied.task_key = trial_key(copied.name)
        return copied


def _lifecycle_of(task: Task[Any, Any]) -> TrialLifecycle | None:
    for hook in task.on_running_hooks:
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, TrialLifecycle):
            return owner
    return None


def experiment_task(
    experiment: ExperimentLike, capture: str | None = None, **task_options: Any
) -> ExperimentTask:
    """The experiment's main function as a Prefect task; each of its task runs is an observed run.

    Args:
        experiment: The experiment (with its main function defined).
        capture: The trials' capture mode (default ``sys``: concurrent trials each get only
            their own output; ``fd`` only where one trial runs per process).
        **task_options: Passed to :class:`prefect.Task` (``retries``, ``timeout_seconds``,
            ``task_run_name``, ``tags``...), e.g. ``ex.task(retries=2)``.
    """
    if capture is not None and capture not in CAPTURE_MODES:
        raise ValueError(f"capture mode must be one of {', '.join(CAPTURE_MODES)}, not {capture!r}")
    flow = experiment.flow
    lifecycle = TrialLifecycle(experiment, capture)

    def body(**kwargs: Any) -> Any:
        return lifecycle.execute()

    signature = getattr(flow.fn, "__signature__", None)
    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__annotations__ = dict(getattr(flow.fn, "__annotations__", {}))
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(body, attribute, getattr(flow.fn, attribute))
    hooks: dict[str, Any] = {
        "on_running": [lifecycle.on_running, *task_options.pop("on_running", [])],
        "on_completion": [lifecycle.on_completion, *task_options.pop("on_completion", [])],
        "on_failure": [lifecycle.on_failure, *task_options.pop("on_failure", [])],
    }
    options = {"name": experiment.name, "description": flow.description, **task_options, **hooks}
    task = ExperimentTask(body, **options)
    task.task_key = trial_key(task.name)
    return task
