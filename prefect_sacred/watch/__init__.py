"""Queued runs and the watcher: runs recorded QUEUED before they start, and their ends found.

``ex.queue(...)`` and ``python exp.py -q`` create a flow run of the experiment's deployment and
record it QUEUED; :class:`Watcher` (inside ``ex.serve`` or ``prefect-sacred watch``) records
runs created elsewhere. See the README's "Queued runs and the watcher".
"""

from prefect_sacred.watch.queueing import (
    CLAIM_LABEL,
    QUEUED_ID_LABEL,
    QueuedRun,
    claim,
    find_deployment,
    queue_run,
    queued_id,
    record_queued,
    release,
)
from prefect_sacred.watch.watcher import Watcher

__all__ = [
    "CLAIM_LABEL",
    "QUEUED_ID_LABEL",
    "QueuedRun",
    "Watcher",
    "claim",
    "find_deployment",
    "queue_run",
    "queued_id",
    "record_queued",
    "release",
]
