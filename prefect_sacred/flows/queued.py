"""Runs recorded before they start: ``queued_event`` for a flow run that has not started yet.

``ex.queue(...)`` and ``python exp.py -q`` create a flow run of the experiment's deployment
(:func:`queue_run`); it and the watcher record a waiting flow run QUEUED with
:func:`record_queued`, having claimed it (:mod:`prefect_sacred.flows.claims`).
"""

from __future__ import annotations

import logging
import sys
import typing
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.core.fanout import ObserverFanout, observer_name
from prefect_sacred.core.info import gather_host_info
from prefect_sacred.flows.claims import CLAIM_LABEL, claim_token, label_queued_id
from prefect_sacred.flows.flow_runs import run_observers
from prefect_sacred.flows.options import RunOptions, UsageError, resolve_options
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.flows.starting import Prepared, RunRequest, build_meta
from prefect_sacred.prefect_client import sync_client
from prefect_sacred.serialization import utcnow

if typing.TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import FlowRun

    from prefect_sacred.flows.experiment_like import ExperimentLike
    from prefect_sacred.observers.base import ObserverLike

__all__ = [
    "QueuedRun",
    "find_deployment",
    "queue_from_commandline",
    "queue_options",
    "queue_run",
    "record_queued",
]

logger = logging.getLogger("prefect_sacred")


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


def find_deployment(flow_name: str) -> Any:
    """The deployment of flow ``flow_name`` (the most recently updated, when it has several).

    Raises:
        UsageError: the flow has no deployment.
    """
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    with sync_client() as client:
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


def queue_run(ex: ExperimentLike, request: RunRequest) -> QueuedRun:
    """Create a flow run of ``ex``'s deployment for ``request`` and record it QUEUED.

    The flow run's parameters are the assembled config's top-level entries, its named configs
    and its seed, so the run that starts later has the config recorded now; its observer flags
    and other options travel as labels (see :mod:`prefect_sacred.flows.travel`), so it records
    into them too, with the same ``meta``, and behaves as asked.

    Raises:
        UsageError: no deployment, a command other than the main function, or an option with a
            credential in it.
    """
    from prefect.states import Scheduled

    from prefect_sacred.flows.travel import (
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
    labels: dict[str, bool | int | float | str] = {CLAIM_LABEL: claim_token(), OPTIONS_LABEL: travelling}
    if flags:
        labels[FLAGS_LABEL] = flags
    with sync_client() as client:
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=_jsonable(parameters), state=Scheduled(), labels=labels
        )
    prepared = Prepared(request.assembled, request.command)
    return record_queued(ex, flow_run, request.options, request, prepared, f"{ex.name}/{deployment.name}")


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    from prefect_sacred.serialization import flatten

    return {key: flatten(value) for key, value in values.items()}


def record_queued(
    ex: ExperimentLike,
    flow_run: FlowRun,
    options: RunOptions,
    request: RunRequest | None,
    prepared: Prepared,
    deployment: str,
) -> QueuedRun:
    """Send ``queued_event`` to the run's observers and label the flow run with the ``_id``.

    Through the run's fan-out, as every event: observers in descending priority, the first id
    returned is every other's, and one that fails is given the event again until it takes it
    or the experiment's join timeout passes (then it is saved or reported, never silently lost).
    """
    observers = run_observers(ex, options)[0]
    if prepared.assembled is not None:
        config = dict(prepared.assembled.config)
    else:  # the run will fail with the config's error; record what it was given
        config = {**dict(flow_run.parameters or {})}
    experiment_info = ex.experiment_info()
    experiment_info["name"] = options.name or ex.name
    fanout = ObserverFanout(observers, join_timeout=ex.join_timeout)
    run_id = fanout.queued_event(
        ex_info=experiment_info,
        command=prepared.command,
        host_info=gather_host_info(ex.captured_env),
        queue_time=utcnow(),
        config=config,
        meta_info=build_meta(flow_run, options, request, prepared),
        _id=options.id,
    )
    left = fanout.join()
    label_queued_id(flow_run.id, run_id)
    recorded = [observer for observer in fanout.started if observer_name(observer) not in left]
    return QueuedRun(run_id, flow_run.id, flow_run.name, deployment, config, observers=recorded)


def queue_options(options: dict[str, Any] | RunOptions | None) -> RunOptions:
    """``ex.queue``'s options, resolved as ``ex.run``'s, marked ``--queue``."""
    resolved = options if isinstance(options, RunOptions) else resolve_options(options)
    resolved.recorded.setdefault("--queue", True)
    return resolved


def queue_from_commandline(ex: ExperimentLike, request: RunRequest, prog: str) -> QueuedRun:
    """``-q/--queue``: create the flow run, record it QUEUED, and say where."""
    try:
        queued = queue_run(ex, request)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    flow_run = f"{queued.flow_run_name} ({queued.flow_run_id})"
    print(f"Queued run {queued._id} as flow run {flow_run} of {queued.deployment}")
    for name, where in queued.locations():
        print(f"Run {queued._id} (QUEUED) stored by {name}: {where}")
    return queued
