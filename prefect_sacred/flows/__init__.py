"""Experiments as Prefect flows: the experiment, its runs, the hooks and the command line.

Names are imported on first use (PEP 562): the flow engine loads only when an experiment is made.
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.flows.capture import apply_backspaces_and_linefeeds
    from prefect_sacred.flows.commandline import UsageError
    from prefect_sacred.flows.experiment import Experiment, observing
    from prefect_sacred.flows.run import ObserverError, Run, current_run

__all__ = [
    "Experiment",
    "ObserverError",
    "Run",
    "UsageError",
    "apply_backspaces_and_linefeeds",
    "current_run",
    "observing",
]

__getattr__ = _lazy_attributes(
    __name__,
    {
        "apply_backspaces_and_linefeeds": "prefect_sacred.flows.capture",
        "UsageError": "prefect_sacred.flows.commandline",
        "Experiment": "prefect_sacred.flows.experiment",
        "observing": "prefect_sacred.flows.experiment",
        "ObserverError": "prefect_sacred.flows.run",
        "Run": "prefect_sacred.flows.run",
        "current_run": "prefect_sacred.flows.run",
    },
)
