"""How a flow run of an experiment becomes a :class:`~prefect_sacred.core.run.Run`.

``ex.run`` leaves its request in a context variable for the flow's ``on_running`` hook; a run
started any other way (a deployment, a schedule, the UI, a direct flow call, a trial of a sweep)
has only the flow run's parameters, from which the config is assembled here.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Mapping
from typing import Any

from prefect_sacred.config.captured import new_seed
from prefect_sacred.core.fanout import ObserverError
from prefect_sacred.core.info import gather_host_info
from prefect_sacred.core.run import Run
from prefect_sacred.flows.beat_events import beat_sender_for
from prefect_sacred.flows.commandline import apply_loglevel, check_clean
from prefect_sacred.flows.options import RunOptions, UsageError, sacred_options
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.flows.starting import (
    Prepared,
    borrow_observers,
    build_meta,
    context_observers,
    current_request,
    differs,
    return_observers,
)
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.prefect_ui.observer import with_prefect_ui
from prefect_sacred.observers.registry import OBSERVERS_ENV_VAR, ObserverConfigError, observers_from_env

if typing.TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from prefect_sacred.flows.experiment_like import ExperimentLike
    from prefect_sacred.flows.travel import Travelled

__all__ = ["create_run", "deployment_config", "deployment_observers", "run_observers"]

logger = logging.getLogger("prefect_sacred")


def deployment_observers(ex: ExperimentLike) -> list[ObserverLike]:
    """Observers of a run started without ``ex.run``: from code and ``PREFECT_SACRED_OBSERVERS``."""
    return [*ex.observers, *observers_from_env()]


def run_observers(ex: ExperimentLike, options: RunOptions) -> tuple[list[ObserverLike], ObserverError | None]:
    """The observers of a run with ``options``, and the error of a bad observer setting if any.

    With a bad ``PREFECT_SACRED_OBSERVERS`` the run still starts for the observers from code,
    which then record the failure.
    """
    if options.unobserved:
        return [], None
    try:
        return [*deployment_observers(ex), *options.observers, *context_observers.get()], None
    except ObserverConfigError as exc:
        error = ObserverError(f"{OBSERVERS_ENV_VAR}: {exc}")
        return [*ex.observers, *options.observers, *context_observers.get()], error


def deployment_config(
    ex: ExperimentLike, parameters: Mapping[str, Any] | None, force: bool = False
) -> Prepared:
    """The config of a run started with the flow parameters ``parameters`` (not by ``ex.run``).

    Parameters equal to their default are not updates, so entries derived from updated ones
    follow them (the UI submits every field of its form). ``force``: ``-f/--force`` (a queued run's).
    """
    given = dict(parameters or {})
    named = given.pop(NAMED_CONFIGS_PARAMETER, None) or []
    if isinstance(named, str):
        named = [named]
    signature = inspect.signature(ex.flow.fn)
    defaults = {name: parameter.default for name, parameter in signature.parameters.items()}
    updates = {
        key: value
        for key, value in given.items()
        if (key not in defaults or differs(value, defaults[key])) and not (key == "seed" and value is None)
    }
    command = ex.default_command or "main"
    try:
        assembled = ex.assemble(updates, list(named), command, force=force)
        ex._check_values(assembled)
    except UsageError as exc:
        return Prepared(None, command, exc, updates=updates)
    return Prepared(assembled, command, updates=updates)


def create_run(ex: ExperimentLike, flow_run: FlowRun) -> Run:
    """The (not yet started) run of ``flow_run``, which just entered Running."""
    request = current_request.get()
    travelled = None
    if request is not None and request.run is None:
        options = request.options
        prepared = Prepared(request.assembled, request.command)
    else:  # a deployment, a schedule, the UI, or the flow called directly
        request, options = None, RunOptions()
        travelled = _travelled_options(flow_run)
        if travelled is not None:  # queued with -q or ex.queue: as asked then
            options = travelled.options
        prepared = deployment_config(ex, flow_run.parameters, force=options.force)
        if travelled is not None:
            prepared = _as_queued(ex, options, prepared)
    ex._prepared[flow_run.id] = prepared
    observers, setup_error = run_observers(ex, options)
    if request is None and not options.unobserved:  # a queued run's flags came with it
        observers, setup_error = _with_flag_observers(flow_run, observers, setup_error)
    if prepared.assembled is not None:
        config = prepared.assembled.config
    else:
        config = {**dict(flow_run.parameters or {}), "seed": None}
    if config.get("seed") is None:
        config["seed"] = new_seed()
    experiment_info = ex.experiment_info()
    experiment_info["name"] = options.name or ex.name or "experiment"
    meta = build_meta(flow_run, options, request, prepared)
    if request is None and travelled is not None:  # the meta of its QUEUED record
        meta["options"] = sacred_options(options.recorded, travelled.words)
        meta["config_updates"] = travelled.config_updates(config)
    run = Run(
        experiment_info=experiment_info,
        host_info=gather_host_info(ex.captured_env),
        meta_info=meta,
        config=config,
        command=prepared.command,
        observers=with_prefect_ui(borrow_observers(observers), enabled=not options.unobserved),
        beat_interval=options.beat_interval if options.beat_interval is not None else ex.beat_interval,
        capture_mode=options.capture or ex.capture_mode,  # run.captured_out, observed or not
        captured_out_filter=ex.captured_out_filter,
        _id=options.id if request is not None else _queued_id(flow_run),
        join_timeout=ex.join_timeout,
        beat_events=beat_sender_for,
    )
    run.config_modifications = prepared.assembled.mods if prepared.assembled else None
    if request is not None and request.info:
        run.info.update(request.info)
    run.start_error = setup_error
    prepared_for = ex._prepared

    def finished(run: Run) -> None:
        prepared_for.pop(flow_run.id, None)
        return_observers(run)

    run.on_finish = finished
    ex.last_run = run
    if request is not None:
        request.run = run
    return run


def _with_flag_observers(
    flow_run: FlowRun, observers: list[ObserverLike], error: ObserverError | None
) -> tuple[list[ObserverLike], ObserverError | None]:
    """``observers`` plus those of the observer flags ``-q`` sent with the flow run."""
    from prefect_sacred.flows.travel import FLAGS_LABEL, flag_observers

    try:
        return [*observers, *flag_observers(flow_run.labels, observers)], error
    except ObserverConfigError as exc:
        return observers, error or ObserverError(f"{FLAGS_LABEL}: {exc}")


def _travelled_options(flow_run: FlowRun) -> Travelled | None:
    """The options ``-q``/``ex.queue`` sent with the flow run, if any (a bad label: none, logged)."""
    from prefect_sacred.flows.travel import travelled_options

    try:
        return travelled_options(flow_run.labels)
    except UsageError as exc:
        logger.warning("flow run %s: its queued options are ignored: %s", flow_run.id, exc)
        return None


def _as_queued(ex: ExperimentLike, options: RunOptions, prepared: Prepared) -> Prepared:
    """Apply a queued run's ``-l`` and ``-e`` where it starts (they were checked where it was queued)."""
    if options.loglevel is not None:  # a deployment run has its process to itself
        apply_loglevel(ex, options.loglevel)
    if options.enforce_clean and prepared.error is None:
        try:  # the sources here may not be the queuer's
            check_clean(ex)
        except UsageError as exc:
            return Prepared(prepared.assembled, prepared.command, exc, updates=prepared.updates)
    return prepared


def _queued_id(flow_run: FlowRun) -> Any:
    """The id ``-q``/``ex.queue`` or the watcher gave this flow run before it started, if any."""
    from prefect_sacred.flows.claims import queued_id

    return queued_id(flow_run)
