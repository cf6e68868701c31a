"""The Prefect glue: an experiment's flow, its hooks, flow-run options, and queued runs.

* :mod:`.lifecycle`: the flow-run hooks that start and end a :class:`~prefect_sacred.core.Run`;
* :mod:`.flow_runs`: the run of a flow run (its config, options and observers), and
  :mod:`.parameters`, the flow itself and its parameters;
* :mod:`.options` and :mod:`.commandline`: Sacred's run flags and command line, parsed;
* :mod:`.queued` and :mod:`.claims`: runs recorded QUEUED before they start;
* :mod:`.labels`, :mod:`.travel`, :mod:`.beat_events`: what a run leaves on its flow run.

Names are imported on first use (PEP 562). ``Experiment`` and ``observing`` were exported here
before the facade moved to :mod:`prefect_sacred.experiment`; they are resolved from there by
name only (this package imports nothing above it).
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.core.run import ObserverError, Run, current_run
    from prefect_sacred.flows.options import UsageError
    from prefect_sacred.utils import apply_backspaces_and_linefeeds

__all__ = [
    "Experiment",
    "ObserverError",
    "Run",
    "UsageError",
    "apply_backspaces_and_linefeeds",
    "current_run",
    "observing",
]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "apply_backspaces_and_linefeeds": "prefect_sacred.utils",
        "UsageError": "prefect_sacred.flows.options",
        "Experiment": "prefect_sacred.experiment",
        "observing": "prefect_sacred.experiment",
        "ObserverError": "prefect_sacred.core.run",
        "Run": "prefect_sacred.core.run",
        "current_run": "prefect_sacred.core.run",
    },
)
