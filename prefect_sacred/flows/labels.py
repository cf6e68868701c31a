"""What a run leaves on its Prefect flow run: the run id as a label and a tag.

The label is how a hook in another process finds the run; the tag is how people find it in
the UI (``sacred-id:7``, filterable on the Runs page). The artifacts in the UI come from
:class:`~prefect_sacred.observers.prefect_ui.PrefectArtifactsObserver`. All of it is best
effort: Prefect being slow or away must never fail or lose an experiment run, whose record
lives in the observers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prefect_sacred.prefect_client import sync_client

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["RUN_ID_LABEL", "RUN_ID_TAG_PREFIX", "label_run_id", "read_run_id", "run_id_tag", "ui_url"]

RUN_ID_LABEL = "prefect-sacred.run-id"
RUN_ID_TAG_PREFIX = "sacred-id:"

logger = logging.getLogger("prefect_sacred")


def run_id_tag(run_id: Any) -> str:
    """The flow run's tag naming the experiment run, e.g. ``sacred-id:7``."""
    return f"{RUN_ID_TAG_PREFIX}{run_id}"


def label_run_id(flow_run_id: UUID, run_id: Any) -> None:
    """Record the experiment run's ``_id`` on the flow run: a label, and a tag when it has one.

    The label is for hooks in other processes: a run that started without an id (only
    notifiers observe it) is labelled with ``""``, so a hook elsewhere still knows it started
    and can send its end.
    """
    try:
        with sync_client() as client:
            # Labels keep JSON scalars, so an int id comes back as an int, a str as a str.
            client.update_flow_run_labels(flow_run_id, {RUN_ID_LABEL: "" if run_id is None else run_id})
            if run_id is not None:
                tags = list(client.read_flow_run(flow_run_id).tags or [])
                tags = [tag for tag in tags if not tag.startswith(RUN_ID_TAG_PREFIX)] + [run_id_tag(run_id)]
                client.update_flow_run(flow_run_id, tags=tags)
    except Exception as exc:
        logger.warning("could not label flow run %s with run id %r: %s", flow_run_id, run_id, exc)


def read_run_id(flow_run_id: UUID) -> tuple[bool, Any]:
    """Whether the flow run started an experiment run, and that run's ``_id`` (None if none).

    Written by :func:`label_run_id`.
    """
    with sync_client() as client:
        flow_run = client.read_flow_run(flow_run_id)
    labels = flow_run.labels or {}
    if RUN_ID_LABEL not in labels:
        return False, None
    value = labels[RUN_ID_LABEL]
    return True, (None if value == "" else value)


def ui_url(flow_run_id: UUID) -> str | None:
    """The flow run's page in the Prefect UI, when the UI's address is known."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None
