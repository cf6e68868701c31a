"""Experiments as Prefect flows: the experiment, its runs, the hooks and the command line.

Names are imported on first use (PEP 562): the flow engine loads only when an experiment is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_sacred._lazy import lazy_attributes

if TYPE_CHECKING:
    from prefect_sacred.flows.capture import apply_backspaces_and_linefeeds
    from prefect_sacred.flows.commandline import UsageError
    from prefect_sacred.flows.experiment import Experiment
    from prefect_sacred.flows.run import ObserverError, Run, current_run

__all__ = [
    "Experiment",
    "ObserverError",
    "Run",
    "UsageError",
    "apply_backspaces_and_linefeeds",
    "current_run",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "apply_backspaces_and_linefeeds": "prefect_sacred.flows.capture",
        "UsageError": "prefect_sacred.flows.commandline",
        "Experiment": "prefect_sacred.flows.experiment",
        "ObserverError": "prefect_sacred.flows.run",
        "Run": "prefect_sacred.flows.run",
        "current_run": "prefect_sacred.flows.run",
    },
)
