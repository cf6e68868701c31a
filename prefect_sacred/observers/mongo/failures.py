"""When MongoDB cannot take a run: the file the run is saved to, and a trace that fits.

Sacred pickles the run into ``failure_dir`` and, with the default ``failure_dir=None``, fails
to save anything. Here the run goes, as MongoDB extended JSON (readable without Python, loadable
with ``bson.json_util``), into the run's journal when it has one (beside the events that
``prefect-sacred sync`` delivers; one file per run), else into a default directory, and the
error message says where. A
``fail_trace`` of megabytes (a recursion error) is cut in the middle: its end says what failed.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_sacred.observers import files
from prefect_sacred.observers.delivery import delivering_for_journal

__all__ = ["DEFAULT_FAILURE_DIR", "MongoWriteError", "cap_trace", "write_failure_file"]

DEFAULT_FAILURE_DIR = os.path.join(os.path.expanduser("~"), ".prefect_sacred", "mongo_failures")
MiB = 1024 * 1024


class MongoWriteError(ConnectionError):
    """MongoDB could not record the end of a run; the message names the file holding it."""


def write_failure_file(
    directory: str | None,
    reason: str,
    runs: Any,
    metrics: Any,
    run: dict[str, Any],
    pending_metrics: dict[str, Any],
    pending_files: list[Any],
) -> str:
    """Save a run MongoDB could not take to a new file in ``directory``; returns its path.

    The file (MongoDB extended JSON) holds ``reason``, where the run belongs, its runs document
    ``run`` (with the whole captured output), the metric points not written yet and the files
    not uploaded yet. Without a ``directory``, a run with a journal keeps it there; else the
    default directory is :data:`DEFAULT_FAILURE_DIR`; one that cannot be created falls back to
    the system's temporary directory: the run is saved somewhere rather than lost.
    """
    from bson import json_util

    dump = {
        "reason": reason,
        "database": runs.database.name,
        "runs_collection": runs.name,
        "metrics_collection": metrics.name if metrics is not None else None,
        "run": run,
        "pending_metrics": pending_metrics,
        "pending_files": [list(item) for item in pending_files],
    }
    prefix = f"sacred_mongo_fail_{run.get('_id')}_"
    text = json_util.dumps(dump, indent=1)
    journal = delivering_for_journal()
    if directory is None and journal is not None:
        # Kept with the rest of what the run owes its backends: prefect-sacred sync delivers
        # the run's events from the journal, and the journal goes once all were delivered.
        # One file per run, replaced by each later attempt.
        path = os.path.join(journal, f"{prefix}latest.json")
        files.write_private(path, text.encode("utf-8"))
        return path
    return files.write_failure_file(directory or DEFAULT_FAILURE_DIR, prefix, text)


def cap_trace(trace: list[str], limit: int = MiB) -> list[str]:
    """The trace, without middle lines past ``limit`` characters (the end says what failed)."""
    if sum(len(line) for line in trace) <= limit:
        return trace
    head, size = trace[:3], 0
    tail: list[str] = []
    for line in reversed(trace[3:]):
        if size + len(line) > limit // 2:
            break
        tail.insert(0, line[-limit // 2 :])
        size += len(line)
    return [*head, f"... {len(trace) - len(head) - len(tail)} lines left out ...\n", *tail]
