"""Who records a flow run QUEUED, and the ``_id`` it was queued under.

A queued run's ``_id`` travels with its flow run as the label ``prefect-sacred.queued-id``;
the ``on_running`` hook of the run, wherever it starts, reads it (:func:`queued_id`) and passes
it to ``started_event``, so the QUEUED record becomes RUNNING under the same id everywhere.

Who records a flow run as queued claims it first (:func:`claim_flow_run`, an atomic create of
a Prefect Variable) and labels it ``prefect-sacred.queued-by``: several watchers, and
``ex.queue`` with its own label at creation, never give one flow run two records. A run that
starts while its claim is still being recorded waits for the queued id (at most
:data:`CLAIM_WAIT` seconds after the claim).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from prefect_sacred.flows.labels import RUN_ID_LABEL, run_id_tag
from prefect_sacred.prefect_client import sync_client

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "CLAIM_LABEL",
    "CLAIM_WAIT",
    "QUEUED_ID_LABEL",
    "already_claimed",
    "claim_flow_run",
    "claim_token",
    "label_queued_id",
    "queued_id",
    "release_claim",
]

QUEUED_ID_LABEL = "prefect-sacred.queued-id"
CLAIM_LABEL = "prefect-sacred.queued-by"
#: Seconds a starting run waits for the queued id of a claim (a claimer that died lets go).
CLAIM_WAIT = 30.0

logger = logging.getLogger("prefect_sacred")


def claim_token() -> str:
    """The value of a claim label: who claimed, and when (``host:pid:nonce@time``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}@{time.time():.3f}"


def _claim_time(token: Any) -> float | None:
    try:
        return float(str(token).rsplit("@", 1)[1])
    except (IndexError, ValueError):
        return None


def label_queued_id(flow_run_id: UUID, run_id: Any) -> None:
    """Label the flow run with the ``_id`` it was recorded QUEUED under (and tag it)."""
    try:
        with sync_client() as client:
            client.update_flow_run_labels(flow_run_id, {QUEUED_ID_LABEL: "" if run_id is None else run_id})
            if run_id is not None:
                tags = list(client.read_flow_run(flow_run_id).tags or [])
                client.update_flow_run(flow_run_id, tags=[*tags, run_id_tag(run_id)])
    except Exception as exc:
        logger.error("could not label flow run %s with its queued id %r: %s", flow_run_id, run_id, exc)


def claim_flow_run(flow_run_id: UUID) -> bool:
    """Claim a flow run for recording it QUEUED; True if this process won.

    The claim is a Prefect Variable named after the flow run, which the server creates once
    (a second create is refused), so of any number of claimers at once exactly one wins. The
    winner then reads the flow run again: one already labelled (a claimer that finished and
    let go of its variable) is not claimed twice. It labels the flow run ``queued-by`` (what a
    starting run waits on) and lets go of the variable with :func:`release_claim` once labelled.
    """
    from prefect.client.schemas.actions import VariableCreate
    from prefect.exceptions import ObjectAlreadyExists

    token = claim_token()
    with sync_client() as client:
        if already_claimed(client.read_flow_run(flow_run_id)):
            return False
        try:
            client.create_variable(VariableCreate(name=_claim_variable(flow_run_id), value=token))
        except ObjectAlreadyExists:
            return False
        if already_claimed(client.read_flow_run(flow_run_id)):
            client.delete_variable_by_name(_claim_variable(flow_run_id))
            return False
        client.update_flow_run_labels(flow_run_id, {CLAIM_LABEL: token})
    return True


def release_claim(flow_run_id: UUID) -> None:
    """Let go of a claim once the flow run carries its queued id (later claimers see that)."""
    from prefect.exceptions import ObjectNotFound

    try:
        with sync_client() as client:
            client.delete_variable_by_name(_claim_variable(flow_run_id))
    except ObjectNotFound:
        pass
    except Exception as exc:  # harmless: the label keeps others out; the variable stays behind
        logger.warning("could not release the claim on flow run %s: %s", flow_run_id, exc)


def _claim_variable(flow_run_id: UUID) -> str:
    return f"prefect-sacred-claim-{flow_run_id}"


def already_claimed(flow_run: FlowRun) -> bool:
    """Whether someone claimed, queued or started this flow run already."""
    labels = flow_run.labels or {}
    return any(key in labels for key in (CLAIM_LABEL, QUEUED_ID_LABEL, RUN_ID_LABEL))


def queued_id(flow_run: FlowRun, wait: float = CLAIM_WAIT) -> Any:
    """The ``_id`` this flow run was queued under, or None; called when it starts.

    A run claimed but not yet labelled waits for the label, at most ``wait`` seconds after
    the claim (its claimer may have died). A deployment's run that nobody claimed claims
    itself, so no watcher records it QUEUED once it started.
    """
    labels = dict(flow_run.labels or {})
    claimed_at = _claim_time(labels.get(CLAIM_LABEL))
    if QUEUED_ID_LABEL in labels or (claimed_at is None and flow_run.deployment_id is None):
        value = labels.get(QUEUED_ID_LABEL)
        return None if value in (None, "") else value
    if claimed_at is None:
        # Nobody has recorded this deployment run queued yet. It claims itself, so that a
        # watcher that sees it only now does not record it QUEUED under another id; when a
        # watcher holds the claim already, the id it is recording is waited for below.
        try:
            if claim_flow_run(flow_run.id):
                release_claim(flow_run.id)
                return None
        except Exception as exc:  # Prefect away: start under a new id rather than not at all
            logger.warning("could not claim flow run %s at its start: %s", flow_run.id, exc)
            return None
        claimed_at = time.time()
    deadline = time.monotonic() + max(0.0, claimed_at + wait - time.time())
    try:
        with sync_client() as client:
            while True:
                labels = dict(client.read_flow_run(flow_run.id).labels or {})
                if QUEUED_ID_LABEL in labels or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
    except Exception as exc:  # Prefect away: start under a new id rather than not at all
        logger.warning("could not read the queued id of flow run %s: %s", flow_run.id, exc)
        return None
    value = labels.get(QUEUED_ID_LABEL)
    return None if value in (None, "") else value
