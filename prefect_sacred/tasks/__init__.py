"""Experiments as Prefect tasks: each task run of ``ex.task()`` (a trial of a sweep) is an observed run.

* :func:`experiment_task` (``ex.task(...)``) builds the task; :mod:`.trials` drives each trial's
  events from the task's hooks;
* :class:`SweepHook` ends, at the parent flow's end, the trials it leaves behind and writes the
  sweep's summary (:mod:`.summary`); :class:`CancelWatch` ends the trials of a cancelled
  deployment run in their own process.

``Heartbeat`` lives in :mod:`prefect_sacred.core.heartbeat` and is kept here for old imports.
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.core.heartbeat import Heartbeat
    from prefect_sacred.tasks.cancel_watch import CancelWatch
    from prefect_sacred.tasks.sweep import SweepHook
    from prefect_sacred.tasks.task import ExperimentTask, experiment_task
    from prefect_sacred.tasks.trial_run import TrialRun

__all__ = ["CancelWatch", "ExperimentTask", "Heartbeat", "SweepHook", "TrialRun", "experiment_task"]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "CancelWatch": "prefect_sacred.tasks.cancel_watch",
        "ExperimentTask": "prefect_sacred.tasks.task",
        "experiment_task": "prefect_sacred.tasks.task",
        "Heartbeat": "prefect_sacred.core.heartbeat",
        "SweepHook": "prefect_sacred.tasks.sweep",
        "TrialRun": "prefect_sacred.tasks.trial_run",
    },
)
