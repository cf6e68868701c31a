"""One trial of a sweep: its run, and the key Prefect knows its task runs by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_sacred.core.run import Run

if TYPE_CHECKING:
    from uuid import UUID

    from prefect_sacred.flows.starting import Prepared

__all__ = ["Trial", "TrialRun", "trial_key"]


class TrialRun(Run):
    """The ``_run`` of one trial: a :class:`Run` that also remembers each metric's last value.

    The last values go into the parent flow's summary of the sweep.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_metrics: dict[str, Any] = {}
        #: ``(parent flow run id, task run id, task run name)`` of the trial.
        self.trial: tuple[str | None, str, str] = (None, "", "")

    def log_scalar(self, name: str, value: Any, step: Any = None) -> None:
        super().log_scalar(name, value, step)
        self.last_metrics[name] = value


@dataclass
class Trial:
    """A live trial in this process: its run, its config, and its parent flow run."""

    run: TrialRun
    prepared: Prepared
    parent: UUID | None
    #: The parent is a deployment run: its runner may cancel it (see :mod:`.cancel_watch`).
    cancellable: bool = False


def trial_key(task_name: str) -> str:
    """The ``task_key`` of the experiment task named ``task_name``, recorded on its task runs.

    The parent flow's hook knows the task's trials by it, whatever their task run names, and
    no other task has it. Prefect derives a task's key from its function, which every
    ``ex.task()`` shares; the key is the same in every process that builds the task.
    """
    return f"prefect_sacred.trial.{task_name}"
