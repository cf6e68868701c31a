"""Runs recorded before they start: ``queued_event`` for a flow run that has not started yet.

A queued run's ``_id`` travels with its flow run as the label ``prefect-sacred.queued-id``;
the ``on_running`` hook of the run, wherever it starts, reads it and passes it to
``started_event``, so the QUEUED record becomes RUNNING under the same id in every observer.

Who records a flow run as queued claims it first (see :func:`claim`, an atomic create of a
Prefect Variable) and labels it ``prefect-sacred.queued-by``: several watchers, and ``ex.queue``
with its own label at creation, never give one flow run two records. A run that starts while
its claim is still being recorded waits for the queued id (at most :data:`CLAIM_WAIT` seconds
after the claim).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.flows import prefect_api
from prefect_sacred.flows.commandline import RunOptions, UsageError, resolve_options
from prefect_sacred.flows.flow_runs import run_observers
from prefect_sacred.flows.info import gather_host_info
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.flows.starting import Prepared, RunRequest, build_meta
from prefect_sacred.serialization import utcnow

if typing.TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

    from prefect_sacred.flows.experiment import Experiment
    from prefect_sacred.observers.base import ObserverLike

__all__ = [
    "CLAIM_LABEL",
    "CLAIM_WAIT",
    "QUEUED_ID_LABEL",
    "QueuedRun",
    "claim",
    "find_deployment",
    "queue_run",
    "queued_id",
    "record_queued",
    "release",
]

QUEUED_ID_LABEL = "prefect-sacred.queued-id"
CLAIM_LABEL = "prefect-sacred.queued-by"
#: Seconds a starting run waits for the queued id of a claim (a claimer that died lets go).
CLAIM_WAIT = 30.0
_TIMEOUT = 10.0

logger = logging.getLogger("prefect_sacred")


def _client() -> SyncPrefectClient:
    from prefect.client.orchestration import get_client

    return get_client(httpx_settings={"timeout": _TIMEOUT}, sync_client=True)


@dataclass
class QueuedRun:
    """A run recorded QUEUED: its ``_id``, its flow run and where each observer stored it."""

    _id: Any
    flow_run_id: UUID
    flow_run_name: str
    deployment: str
    config: dict[str, Any]
    status: str = "QUEUED"
    observers: list[ObserverLike] = field(default_factory=list)

    def locations(self) -> list[tuple[str, str]]:
        """``(observer, where)`` for each observer that says where it stored the run."""
        places = []
        for observer in self.observers:
            where = getattr(observer, "run_location", lambda: None)()
            if where:
                places.append((type(observer).__name__, str(where)))
        return places


def _claim_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}@{time.time():.3f}"


def _claim_time(token: Any) -> float | None:
    try:
        return float(str(token).rsplit("@", 1)[1])
    except (IndexError, ValueError):
        return None


def find_deployment(flow_name: str) -> Any:
    """The deployment of flow ``flow_name`` (the most recently updated, when it has several).

    Raises:
        UsageError: the flow has no deployment.
    """
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    with _client() as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=DeploymentSort.UPDATED_DESC,
            limit=1,
        )
    if not deployments:
        raise UsageError(
            f"a queued run needs a deployment of flow {flow_name!r}: serve it (ex.serve('train')) "
            "or deploy it first"
        )
    return deployments[0]


def queue_run(ex: Experiment, request: RunRequest) -> QueuedRun:
    """Create a flow run of ``ex``'s deployment for ``request`` and record it QUEUED.

    The flow run's parameters are the assembled config's top-level entries, its named configs
    and its seed, so the run that starts later has the config recorded now; its observer flags
    and other options travel as labels (see :mod:`prefect_sacred.watch.travel`), so it records
    into them too, with the same ``meta``, and behaves as asked.

    Raises:
        UsageError: no deployment, a command other than the main function, or an option with a
            credential in it.
    """
    from prefect.states import Scheduled

    from prefect_sacred.watch.travel import (
        FLAGS_LABEL,
        OPTIONS_LABEL,
        queue_notes,
        travelling_flags,
        travelling_options,
    )

    if request.command != ex.default_command:
        raise UsageError(f"only the main function can be queued, not {request.command!r}")
    # Both refused before anything exists when they hold a credential.
    flags = travelling_flags(request.options.observer_flags)
    travelling = travelling_options(request.options, request.option_words, request.config_updates)
    for note in queue_notes(request.options):
        logger.warning(note)
    deployment = find_deployment(ex.name)
    names = set(ex.flow.parameters.properties)
    config = request.assembled.config
    parameters: dict[str, Any] = {key: value for key, value in config.items() if key in names}
    parameters["seed"] = request.assembled.seed
    if request.assembled.named_configs and NAMED_CONFIGS_PARAMETER in names:
        parameters[NAMED_CONFIGS_PARAMETER] = list(request.assembled.named_configs)
    labels: dict[str, bool | int | float | str] = {CLAIM_LABEL: _claim_token(), OPTIONS_LABEL: travelling}
    if flags:
        labels[FLAGS_LABEL] = flags
    with _client() as client:
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=_jsonable(parameters), state=Scheduled(), labels=labels
        )
    prepared = Prepared(request.assembled, request.command)
    return record_queued(ex, flow_run, request.options, request, prepared, f"{ex.name}/{deployment.name}")


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    from prefect_sacred.serialization import flatten

    return {key: flatten(value) for key, value in values.items()}


def record_queued(
    ex: Experiment,
    flow_run: FlowRun,
    options: RunOptions,
    request: RunRequest | None,
    prepared: Prepared,
    deployment: str,
) -> QueuedRun:
    """Send ``queued_event`` to the run's observers and label the flow run with the ``_id``.

    Observers are called in descending priority; the first id returned is every other's.
    One that raises is logged and skipped: the others still record the run.
    """
    observers = run_observers(ex, options)[0]
    if prepared.assembled is not None:
        config = dict(prepared.assembled.config)
    else:  # the run will fail with the config's error; record what it was given
        config = {**dict(flow_run.parameters or {})}
    meta = build_meta(flow_run, options, request, prepared)
    experiment_info = ex.experiment_info()
    experiment_info["name"] = options.name or ex.name
    host_info = gather_host_info(ex.captured_env)
    queue_time = utcnow()
    run_id = options.id
    recorded = []
    for observer in sorted(observers, key=lambda each: -getattr(each, "priority", 0)):
        try:
            returned = observer.queued_event(
                ex_info=experiment_info,
                command=prepared.command,
                host_info=host_info,
                queue_time=queue_time,
                config=config,
                meta_info=meta,
                _id=run_id,
            )
        except Exception as exc:
            logger.error(
                "observer %s could not queue flow run %s: %s", type(observer).__name__, flow_run.id, exc
            )
            continue
        recorded.append(observer)
        if run_id is None:
            run_id = returned
    _label(flow_run.id, run_id)
    return QueuedRun(run_id, flow_run.id, flow_run.name, deployment, config, observers=recorded)


def _label(flow_run_id: UUID, run_id: Any) -> None:
    try:
        with _client() as client:
            client.update_flow_run_labels(flow_run_id, {QUEUED_ID_LABEL: "" if run_id is None else run_id})
            if run_id is not None:
                tags = list(client.read_flow_run(flow_run_id).tags or [])
                client.update_flow_run(flow_run_id, tags=[*tags, prefect_api.run_id_tag(run_id)])
    except Exception as exc:
        logger.error("could not label flow run %s with its queued id %r: %s", flow_run_id, run_id, exc)


def claim(flow_run_id: UUID) -> bool:
    """Claim a flow run for recording it QUEUED; True if this process won.

    The claim is a Prefect Variable named after the flow run, which the server creates once
    (a second create is refused), so of any number of claimers at once exactly one wins. The
    winner then reads the flow run again: one already labelled (a claimer that finished and
    let go of its variable) is not claimed twice. It labels the flow run ``queued-by`` (what a
    starting run waits on) and lets go of the variable with :func:`release` once labelled.
    """
    from prefect.client.schemas.actions import VariableCreate
    from prefect.exceptions import ObjectAlreadyExists

    token = _claim_token()
    with _client() as client:
        if _taken(client.read_flow_run(flow_run_id)):
            return False
        try:
            client.create_variable(VariableCreate(name=_claim_variable(flow_run_id), value=token))
        except ObjectAlreadyExists:
            return False
        if _taken(client.read_flow_run(flow_run_id)):
            client.delete_variable_by_name(_claim_variable(flow_run_id))
            return False
        client.update_flow_run_labels(flow_run_id, {CLAIM_LABEL: token})
    return True


def release(flow_run_id: UUID) -> None:
    """Let go of a claim once the flow run carries its queued id (later claimers see that)."""
    from prefect.exceptions import ObjectNotFound

    try:
        with _client() as client:
            client.delete_variable_by_name(_claim_variable(flow_run_id))
    except ObjectNotFound:
        pass
    except Exception as exc:  # harmless: the label keeps others out; the variable stays behind
        logger.warning("could not release the claim on flow run %s: %s", flow_run_id, exc)


def _claim_variable(flow_run_id: UUID) -> str:
    return f"prefect-sacred-claim-{flow_run_id}"


def _taken(flow_run: FlowRun) -> bool:
    labels = flow_run.labels or {}
    return any(key in labels for key in (CLAIM_LABEL, QUEUED_ID_LABEL, prefect_api.RUN_ID_LABEL))


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
            if claim(flow_run.id):
                release(flow_run.id)
                return None
        except Exception as exc:  # Prefect away: start under a new id rather than not at all
            logger.warning("could not claim flow run %s at its start: %s", flow_run.id, exc)
            return None
        claimed_at = time.time()
    deadline = time.monotonic() + max(0.0, claimed_at + wait - time.time())
    try:
        with _client() as client:
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


def queue_options(options: dict[str, Any] | RunOptions | None) -> RunOptions:
    """``ex.queue``'s options, resolved as ``ex.run``'s, marked ``--queue``."""
    resolved = options if isinstance(options, RunOptions) else resolve_options(options)
    resolved.recorded.setdefault("--queue", True)
    return resolved
