"""What starting a run takes: the request ``ex.run`` makes, observers, seeds, the meta info."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import random
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefect_sacred.config.assemble import Assembled
from prefect_sacred.config.captured import binding_scope, reset_bindings, set_global_seed
from prefect_sacred.config.ingredient import Ingredient
from prefect_sacred.core.capture import UserLog
from prefect_sacred.core.run import Run, format_fail_trace
from prefect_sacred.flows.labels import ui_url
from prefect_sacred.flows.options import RunOptions, sacred_options
from prefect_sacred.flows.parameters import NAMED_CONFIGS_PARAMETER
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.serialization import flatten, utcnow

if typing.TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "CommandRun",
    "Prepared",
    "RunRequest",
    "Unsupported",
    "borrow_observers",
    "build_meta",
    "call_command",
    "context_observers",
    "current_request",
    "differs",
    "observing",
    "return_observers",
    "sorted_ingredients",
]


class Unsupported(NotImplementedError):
    """A Sacred feature this package does not offer (the message says what to do instead)."""


@dataclass
class RunRequest:
    """What ``ex.run`` asks of the flow run it is about to start (read by ``on_running``)."""

    options: RunOptions
    config_updates: dict[str, Any] | None
    assembled: Assembled
    command: str
    info: dict[str, Any] | None = None
    meta_info: dict[str, Any] | None = None
    option_words: dict[str, Any] | None = None
    run: Run | None = None


@dataclass
class Prepared:
    """A flow run's assembled config, between the ``on_running`` hook and the flow body."""

    assembled: Assembled | None
    command: str
    error: Exception | None = None
    #: The config updates it was given (a deployment run: the parameters that differ from the
    #: form's defaults, and the seed when it has one), Sacred's ``meta.config_updates``.
    updates: dict[str, Any] | None = None


current_request: contextvars.ContextVar[RunRequest | None] = contextvars.ContextVar(
    "prefect_sacred_run_request", default=None
)

context_observers: contextvars.ContextVar[tuple[ObserverLike, ...]] = contextvars.ContextVar(
    "prefect_sacredcontext_observers", default=()
)


@contextlib.contextmanager
def observing(*observers: ObserverLike) -> Iterator[None]:
    """Add ``observers`` to every run started in this context, besides the experiment's own.

    Example:
        ```python
        with observing(FileStorageObserver("debug_runs")):
            ex.run()
        ```
    """
    token = context_observers.set((*context_observers.get(), *observers))
    try:
        yield
    finally:
        context_observers.reset(token)


# Observer instances keep per-run state; one that is busy with a live run is copied for the next.
_busy_observers: set[int] = set()
_busy_lock = threading.Lock()


@dataclass
class CommandRun:
    """The ``_run`` of a command run without observers or a flow (``print_config`` ...)."""

    config: dict[str, Any]
    config_modifications: Any
    experiment_info: dict[str, Any]
    meta_info: dict[str, Any]
    info: dict[str, Any]
    logger: Any
    result: Any = None
    status: str = "RUNNING"
    _id: Any = None

    def locations(self) -> list[tuple[str, str]]:
        return []


def differs(value: Any, default: Any) -> bool:
    try:
        return bool(flatten(value) != flatten(default))
    except Exception:
        return True


def sorted_ingredients(root: Ingredient) -> list[Ingredient]:
    """Ingredients before the ones using them, the experiment last (Sacred's hook order)."""
    depth: dict[int, tuple[int, Ingredient]] = {}
    for ingredient, level in root.traverse_ingredients():
        depth[id(ingredient)] = (max(level, depth.get(id(ingredient), (0, ingredient))[0]), ingredient)
    return [ingredient for _, ingredient in sorted(depth.values(), key=lambda item: -item[0])]


def borrow_observers(observers: list[ObserverLike]) -> list[ObserverLike]:
    """The observers for a new run: a copy of each that a live run of this process still uses."""
    claimed = []
    with _busy_lock:
        for observer in observers:
            if id(observer) in _busy_observers:
                observer = copy.copy(observer)
            _busy_observers.add(id(observer))
            claimed.append(observer)
    return claimed


def return_observers(run: Run) -> None:
    """The run ended: its observers may serve the next run as they are."""
    with _busy_lock:
        for observer in run.observers:
            _busy_observers.discard(id(observer))


def build_meta(
    flow_run: FlowRun, options: RunOptions, request: RunRequest | None, prepared: Prepared
) -> dict[str, Any]:
    """Sacred's ``meta``: command, options, named configs, config updates; Prefect's ids beside them."""
    meta: dict[str, Any] = {
        "command": prepared.command,
        "options": sacred_options(options.recorded, request.option_words if request else None),
        "named_configs": list(prepared.assembled.named_configs if prepared.assembled else []),
    }
    if request is not None and request.config_updates is not None:
        meta["config_updates"] = request.config_updates
    elif request is None and prepared.updates is not None:
        meta["config_updates"] = dict(prepared.updates)
    elif request is None:  # its parameters could not even be read as updates
        meta["config_updates"] = {
            key: value for key, value in (flow_run.parameters or {}).items() if key != NAMED_CONFIGS_PARAMETER
        }
    meta["prefect"] = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
        "tags": list(flow_run.tags),
        "ui_url": ui_url(flow_run.id),
    }
    if options.comment is not None:
        meta["comment"] = options.comment
    if options.priority is not None:
        meta["priority"] = options.priority
    if request is not None and request.meta_info:
        meta.update(request.meta_info)
    return meta


#: Modules of Prefect's event websocket that draw from the global ``random`` (ping payloads,
#: reconnect jitter) while a run's body executes.
_WEBSOCKET_MODULES = (
    "websockets.asyncio.connection",
    "websockets.client",
    "websockets.sync.connection",
    "websockets.legacy.protocol",
    "websockets.legacy.client",
)


def keep_prefects_draws_off_the_global_random() -> None:
    """Give Prefect's event websocket a generator of its own.

    It draws from the global ``random`` in the background, so after ``random.seed(seed)`` the
    run's own ``random.random()`` would differ from Sacred's for the same seed.
    """
    import importlib

    for name in _WEBSOCKET_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]


def call_command(root: Ingredient, run: Any, assembled: Assembled, command: str) -> Any:
    """Run ``command`` of ``root`` with the run's config bound, its hooks around it (as in Sacred).

    ``run`` is a :class:`Run` (its ``_run``, its end time and fail trace are set here) or an
    unobserved command's stand-in.
    """
    keep_prefects_draws_off_the_global_random()
    set_global_seed(assembled.seed)
    bindings = assembled.bindings(run, root.logger if root.logger is not None else UserLog(run.logger, {}))
    function = dict(root.gather_commands())[command]
    hooks = [hook for ingredient in sorted_ingredients(root) for hook in ingredient.pre_run_hooks]
    post_hooks = [hook for ingredient in sorted_ingredients(root) for hook in ingredient.post_run_hooks]
    token = binding_scope(bindings)
    tokens = run.bind_context() if isinstance(run, Run) else []
    try:
        for hook in hooks:
            hook()
        result = run.result = function()  # post-run hooks see it, as in Sacred
        for hook in post_hooks:
            hook()
    except BaseException as exc:
        if isinstance(run, Run):
            run.exception = exc
            run.fail_trace = format_fail_trace(exc, skip_frames=1)
            run.stop_time = utcnow()
        raise
    finally:
        for each in reversed(tokens):
            each.var.reset(each)
        reset_bindings(token)
    if isinstance(run, Run):
        run.stop_time = utcnow()  # the run spans the main function, as in Sacred
    return result
