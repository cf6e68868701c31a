"""A sweep's summary: each trial's row, published where the parent flow can read it, and the table.

A trial whose parent runs in this process hands its row to the parent's lifecycle; one whose
parent runs elsewhere (a Dask or Ray worker) publishes it as an artifact of its task run
(:func:`publish_trial`), which the parent's hook reads back (:func:`published_rows`). The
parent's summary is a markdown artifact on its flow run (:func:`publish_summary`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

from prefect_sacred.prefect_client import close_client, open_client, sync_client
from prefect_sacred.serialization import flatten

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from prefect.client.schemas.objects import State

    from prefect_sacred.tasks.trial_run import TrialRun

__all__ = [
    "every_page",
    "metric_pairs",
    "publish_summary",
    "publish_trial",
    "published_rows",
    "row_of",
    "status_of",
    "summary_markdown",
    "trial_status",
]

logger = logging.getLogger("prefect_sacred")

#: The metadata key of a trial's artifact holding its summary row (JSON).
_ROW_KEY = "prefect_sacred_trial"


def publish_trial(run: TrialRun) -> None:
    """A trial that ran away from its parent's process: its summary row as a task run artifact.

    One API call per trial (best effort); the artifact also shows the trial on its task run.
    """
    from uuid import UUID

    from prefect.client.schemas.actions import ArtifactCreate

    parent, task_run_id, name = run.trial
    row = row_of(run)
    try:
        text = json.dumps(flatten(row))
        _PUBLISHERS.client().create_artifact(
            ArtifactCreate(
                type="markdown",
                data=summary_markdown(name, [row]),
                flow_run_id=UUID(parent) if parent else None,
                task_run_id=UUID(task_run_id),
                description=f"Trial {name}: run {run._id} {run.status}",
                metadata_={_ROW_KEY: text},
            )
        )
    except Exception as exc:
        logger.warning("trial %s: cannot publish its summary: %s", name, exc)


def published_rows(flow_run_id: UUID) -> dict[str, dict[str, Any]]:
    """The rows trials in other processes published, by task run id."""

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    rows: dict[str, dict[str, Any]] = {}
    client = None
    try:
        client = open_client()
        artifacts = every_page(
            client.read_artifacts,
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.ID_DESC,
        )
        for artifact in artifacts:
            text = (artifact.metadata_ or {}).get(_ROW_KEY)
            if text and artifact.task_run_id is not None:
                with contextlib.suppress(ValueError):  # cut by Prefect's 500-character limit
                    rows[str(artifact.task_run_id)] = json.loads(text)
    except Exception as exc:
        logger.warning("cannot read the trials' summaries of flow run %s: %s", flow_run_id, exc)
    finally:
        close_client(client)
    return rows


class _ProcessClients:
    """One open Prefect client per process and API URL, for the trials that publish their rows.

    A Ray or Dask worker runs trial after trial: a new client for each costs it about 60 ms
    (loading CA certificates, a new connection). The clients' httpx clients are thread-safe,
    and reconnect by themselves after a broken connection. A forked child never uses, nor
    closes, its parent's (forgotten at the fork); a pickled trial does not carry them (they
    belong to this module). They are closed when the process exits.
    """

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closer_registered = False
        # A lock held by another thread at a fork would stay held in the child forever.
        os.register_at_fork(after_in_child=self._forked)

    def client(self) -> Any:
        """This process's client of the current ``PREFECT_API_URL``, opened on first use."""
        from prefect.settings import PREFECT_API_URL

        key = str(PREFECT_API_URL.value() or "")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = open_client()
                if not self._closer_registered:
                    self._closer_registered = True
                    atexit.register(self.close)
            return client

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._clients = {}

    def close(self) -> None:
        """Close this process's clients."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            close_client(client)


_PUBLISHERS = _ProcessClients()


def every_page(read: Callable[..., list[Any]], **filters: Any) -> list[Any]:
    """Everything ``read`` finds, a page at a time: the server returns at most a page per call.

    The server's page size is its own setting (200 by default), so pages are read until one
    comes back empty. ``filters`` must sort by a total order (an id): the offsets stay valid.
    """
    items: dict[Any, Any] = {}
    offset = 0
    while page := read(**filters, offset=offset):
        offset += len(page)
        items.update((item.id, item) for item in page)  # a late insert can shift one over
    return list(items.values())


def trial_status(state: State[Any]) -> str:
    """How the parent's end ends its trials: cancelled or interrupted, else failed."""
    message = state.message or ""
    if state.is_cancelled() or state.is_cancelling():
        return "INTERRUPTED"
    if state.is_crashed() and ("interrupt signal" in message or "termination signal" in message):
        return "INTERRUPTED"
    return "FAILED"


def status_of(state: Any) -> str:
    if state is None:
        return "PENDING"
    kind = str(state.type.value)
    return {"CRASHED": "FAILED", "CANCELLED": "INTERRUPTED"}.get(kind, kind)


def row_of(run: TrialRun) -> dict[str, Any]:
    """The trial's summary row, short enough to travel as artifact metadata (500 characters)."""
    updates = run.meta_info.get("config_updates") or {}
    return {
        "trial": run.trial[2],
        "task_run_id": run.trial[1],
        "id": run._id,
        "status": run.status or "RUNNING",
        "config": metric_pairs(updates),
        "metrics": metric_pairs(run.last_metrics),
    }


def metric_pairs(values: dict[str, Any], limit: int = 150) -> str:
    text = ", ".join(f"{key}={_short(value)}" for key, value in sorted(values.items()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary_markdown(task_name: str, rows: list[dict[str, Any]]) -> str:
    """The sweep's table: one row per trial, by task run name."""
    rows = sorted(rows, key=lambda row: str(row["trial"]))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    tally = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    lines = [
        f"## Sweep `{task_name}`: {len(rows)} trial{'' if len(rows) == 1 else 's'} ({tally})",
        "",
        "| trial | run id | status | config | final metrics |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row["trial"],
            "" if row["id"] is None else row["id"],
            row["status"],
            row["config"],
            row["metrics"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    value = flatten(value)
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def publish_summary(flow_run_id: UUID, task_name: str, markdown: str) -> None:
    """The summary as a markdown artifact of the parent flow run (best effort)."""
    from prefect.client.schemas.actions import ArtifactCreate

    key = "sweep-" + (re.sub(r"[^a-z0-9-]+", "-", task_name.lower()).strip("-") or "trials")
    try:
        with sync_client() as client:
            client.create_artifact(
                ArtifactCreate(
                    key=key,
                    type="markdown",
                    data=markdown,
                    flow_run_id=flow_run_id,
                    description=f"The trials of experiment task {task_name}",
                )
            )
    except Exception as exc:
        logger.warning("sweep %s: cannot write its summary artifact: %s", task_name, exc)
