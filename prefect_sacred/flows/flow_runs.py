"""How a flow run of an experiment becomes a :class:`~prefect_sacred.flows.run.Run`.

``ex.run`` leaves its request in a context variable for the flow's ``on_running`` hook; a run
started any other way (a deployment, a schedule, the UI, a direct flow call, a trial of a sweep)
has only the flow run's parameters, from which the config is assembled here.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from prefect_sacred.config.captured import new_seed
from prefect_sacred.flows.commandline import RunOptions, UsageError
from prefect_sacred.flows.fanout import ObserverError
from prefect_sacred.flows.info import gather_host_info
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.flows.run import Run
from prefect_sacred.flows.starting import (
    Prepared,
    build_meta,
    claim,
    context_observers,
    current_request,
    differs,
    release,
)
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.prefect_ui.observer import with_prefect_ui
from prefect_sacred.observers.registry import OBSERVERS_ENV_VAR, ObserverConfigError, observers_from_env

if typing.TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from prefect_sacred.flows.experiment import Experiment

__all__ = ["create_run", "deployment_config", "deployment_observers", "run_observers"]


def deployment_observers(ex: Experiment) -> list[ObserverLike]:
    """Observers of a run started without ``ex.run``: from code and ``PREFECT_SACRED_OBSERVERS``."""
    return [*ex.observers, *observers_from_env()]


def run_observers(ex: Experiment, options: RunOptions) -> tuple[list[ObserverLike], ObserverError | None]:
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


def deployment_config(ex: Experiment, parameters: Mapping[str, Any] | None) -> Prepared:
    """The config of a run started with the flow parameters ``parameters`` (not by ``ex.run``).

    Parameters equal to their default are not updates, so entries derived from updated ones
    follow them (the UI submits every field of its form).
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
        assembled = ex.assemble(updates, list(named), command)
        ex._check_values(assembled)
    except UsageError as exc:
        return Prepared(None, command, exc)
    return Prepared(assembled, command)


def create_run(ex: Experiment, flow_run: FlowRun) -> Run:
    """The (not yet started) run of ``flow_run``, which just entered Running."""
    request = current_request.get()
    if request is not None and request.run is None:
        options = request.options
        prepared = Prepared(request.assembled, request.command)
    else:  # a deployment, a schedule, the UI, or the flow called directly
        request, options = None, RunOptions()
        prepared = deployment_config(ex, flow_run.parameters)
    ex._prepared[flow_run.id] = prepared
    observers, setup_error = run_observers(ex, options)
    if prepared.assembled is not None:
        config = prepared.assembled.config
    else:
        config = {**dict(flow_run.parameters or {}), "seed": None}
    if config.get("seed") is None:
        config["seed"] = new_seed()
    experiment_info = ex.experiment_info()
    experiment_info["name"] = options.name or ex.name or "experiment"
    run = Run(
        experiment_info=experiment_info,
        host_info=gather_host_info(ex.captured_env),
        meta_info=build_meta(flow_run, options, request, prepared),
        config=config,
        command=prepared.command,
        observers=with_prefect_ui(claim(observers), enabled=not options.unobserved),
        beat_interval=options.beat_interval if options.beat_interval is not None else ex.beat_interval,
        capture_mode=(options.capture or ex.capture_mode) if observers else "no",
        captured_out_filter=ex.captured_out_filter,
        _id=options.id if request is not None else _queued_id(flow_run),
        join_timeout=ex.join_timeout,
    )
    run.config_modifications = prepared.assembled.mods if prepared.assembled else None
    if request is not None and request.info:
        run.info.update(request.info)
    run.start_error = setup_error
    prepared_for = ex._prepared

    def finished(run: Run) -> None:
        prepared_for.pop(flow_run.id, None)
        release(run)

    run.on_finish = finished
    ex.last_run = run
    if request is not None:
        request.run = run
    return run


def _queued_id(flow_run: FlowRun) -> Any:
    """The id ``-q``/``ex.queue`` or the watcher gave this flow run before it started, if any."""
    from prefect_sacred.watch.queueing import queued_id

    return queued_id(flow_run)
