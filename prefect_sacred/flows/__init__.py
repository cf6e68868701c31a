"""Experiments as Prefect flows: the experiment, its runs, the hooks and the command line."""

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
