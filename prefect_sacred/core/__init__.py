"""The run core: one run of an experiment without Prefect's engine.

* :class:`Run` (``_run``): info, metrics, artifacts, resources, captured output, and its
  lifecycle (start, beats, end); :func:`current_run`;
* its observers' fan-out (:mod:`.fanout`), metric points (:mod:`.metrics`), output capture
  (:mod:`.capture`), heartbeat thread (:mod:`.heartbeat`), host and experiment info (:mod:`.info`);
* the run-local write-ahead journal (:class:`RunJournal`, :mod:`.records`) and
  :func:`sync_journal`, which delivers what a journal holds (``prefect-sacred sync``).

The Prefect glue that drives a run from flow-run hooks is :mod:`prefect_sacred.flows`.
Names are imported on first use (PEP 562).
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.core.fanout import ObserverError, ObserverFanout
    from prefect_sacred.core.heartbeat import Heartbeat
    from prefect_sacred.core.journal import JournalLocked, RunJournal
    from prefect_sacred.core.run import Run, current_run
    from prefect_sacred.core.sync import SyncReport, sync_journal

__all__ = [
    "Heartbeat",
    "JournalLocked",
    "ObserverError",
    "ObserverFanout",
    "Run",
    "RunJournal",
    "SyncReport",
    "current_run",
    "sync_journal",
]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "ObserverError": "prefect_sacred.core.fanout",
        "ObserverFanout": "prefect_sacred.core.fanout",
        "Heartbeat": "prefect_sacred.core.heartbeat",
        "JournalLocked": "prefect_sacred.core.journal",
        "RunJournal": "prefect_sacred.core.journal",
        "Run": "prefect_sacred.core.run",
        "current_run": "prefect_sacred.core.run",
        "SyncReport": "prefect_sacred.core.sync",
        "sync_journal": "prefect_sacred.core.sync",
    },
)
