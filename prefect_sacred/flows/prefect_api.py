"""What a run leaves in Prefect itself: the run-id label and a summary artifact in the UI.

Both are best effort: Prefect being slow or away must never fail or lose an experiment run,
whose record lives in the observers.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uuid import UUID

    from prefect_sacred.flows.run import Run

__all__ = ["RUN_ID_LABEL", "label_run_id", "publish_summary", "read_run_id", "ui_url"]

RUN_ID_LABEL = "prefect-sacred.run-id"

logger = logging.getLogger("prefect_sacred")


def label_run_id(flow_run_id: UUID, run_id: Any) -> None:
    """Record the experiment run's ``_id`` on the flow run, for hooks in other processes.

    A run that started without an id (only notifiers observe it) is labelled with ``""``, so
    a hook elsewhere still knows it started and can send its end.
    """
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            # Labels keep JSON scalars, so an int id comes back as an int, a str as a str.
            client.update_flow_run_labels(flow_run_id, {RUN_ID_LABEL: "" if run_id is None else run_id})
    except Exception as exc:
        logger.warning("could not label flow run %s with run id %r: %s", flow_run_id, run_id, exc)


def read_run_id(flow_run_id: UUID) -> tuple[bool, Any]:
    """Whether the flow run started an experiment run, and that run's ``_id`` (None if none).

    Written by :func:`label_run_id`.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    labels = flow_run.labels or {}
    if RUN_ID_LABEL not in labels:
        return False, None
    value = labels[RUN_ID_LABEL]
    return True, (None if value == "" else value)


def ui_url(flow_run_id: UUID) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def publish_summary(flow_run_id: UUID, run: Run) -> None:
    """A markdown artifact on the flow run: status, result, config and where it is stored."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    try:
        with get_client(sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    type="markdown",
                    key=_artifact_key(run),
                    description=f"Experiment run {run._id}: {run.status}",
                    data=render_summary(run),
                    flow_run_id=flow_run_id,
                )
            )
    except Exception as exc:
        logger.warning("could not publish the run summary to Prefect: %s", exc)


def _artifact_key(run: Run) -> str:
    name = str(run.experiment_info.get("name", "experiment")).lower()
    slug = "".join(char if char.isalnum() else "-" for char in name).strip("-") or "experiment"
    return f"{slug}-run"


def render_summary(run: Run) -> str:
    def block(value: Any) -> str:
        text = json.dumps(value, indent=2, sort_keys=True, default=repr)
        return f"```json\n{text}\n```"

    lines = [
        f"# {run.experiment_info.get('name')} run {run._id}",
        "",
        f"**Status:** {run.status}",
        "",
        "## Result",
        block(run.result),
        "",
        "## Config",
        block(run.config),
        "",
        "## Stored by",
    ]
    locations = run.locations()
    lines += [f"- {name}: `{where}`" for name, where in locations] or ["- no observer"]
    if run.fail_trace:
        lines += ["", "## Error", "```", run.fail_trace[-1].rstrip(), "```"]
    return "\n".join(lines)
