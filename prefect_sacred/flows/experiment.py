"""``Experiment``: a Sacred-style experiment whose main function runs as a Prefect flow."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import json
import logging
import os
import random
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from prefect import Flow

from prefect_sacred.flows import prefect_api
from prefect_sacred.flows.capture import DEFAULT_CAPTURE_MODE
from prefect_sacred.flows.commandline import (
    RunOptions,
    UsageError,
    apply_config_updates,
    parse_command_line,
    resolve_options,
)
from prefect_sacred.flows.info import gather_experiment_info, gather_host_info
from prefect_sacred.flows.lifecycle import RunLifecycle
from prefect_sacred.flows.run import ObserverError, Run, current_run, format_fail_trace
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.registry import OBSERVERS_ENV_VAR, ObserverConfigError, observers_from_env

if typing.TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

logger = logging.getLogger("prefect_sacred")

__all__ = ["Experiment", "observing"]

#: Arguments the main function may declare to receive run objects instead of config values.
SPECIAL_ARGUMENTS = ("_run", "_config", "_seed", "_log")


@dataclass
class _RunRequest:
    """What ``ex.run`` asks of the flow run it is about to start (read by ``on_running``)."""

    options: RunOptions
    config_updates: dict[str, Any] | None
    #: The validated parameters as Python objects: the config Sacred would record.
    params: dict[str, Any]
    run: Run | None = None


_request: contextvars.ContextVar[_RunRequest | None] = contextvars.ContextVar(
    "prefect_sacred_run_request", default=None
)

_context_observers: contextvars.ContextVar[tuple[ObserverLike, ...]] = contextvars.ContextVar(
    "prefect_sacred_context_observers", default=()
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
    token = _context_observers.set((*_context_observers.get(), *observers))
    try:
        yield
    finally:
        _context_observers.reset(token)


# Observer instances keep per-run state; one that is busy with a live run is copied for the next.
_busy_observers: set[int] = set()
_busy_lock = threading.Lock()


class Experiment:
    """An experiment: a main function, its config, and the observers that record its runs.

    Example:
        ```python
        ex = Experiment("mnist")
        ex.observers.append(FileStorageObserver("my_runs"))

        @ex.automain
        def train(epochs: int = 3, lr: float = 0.1, _run=None):
            for epoch in range(epochs):
                _run.log_scalar("loss", 1 / (epoch + 1))
            return 0.9
        ```

    Args:
        name: The experiment's name (default: the main function's name). The Prefect flow is
            named after it.
        base_dir: Where the experiment's sources live (default: the directory of the file that
            creates the experiment). Imported modules under it are recorded as sources.
        captured_env: Names of environment variables to record in the host info.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        captured_env: tuple[str, ...] | list[str] = (),
    ) -> None:
        caller_file = sys._getframe(1).f_globals.get("__file__")
        self.mainfile = os.path.abspath(caller_file) if caller_file else None
        if base_dir is not None:
            self.base_dir = os.path.abspath(base_dir)
        elif self.mainfile:
            self.base_dir = os.path.dirname(self.mainfile)
        else:
            self.base_dir = os.getcwd()
        self.name = name
        self.captured_env = tuple(captured_env)
        self.observers: list[ObserverLike] = []
        self.captured_out_filter: Callable[[str], str] | None = None
        self.beat_interval: float = 10.0
        self.capture_mode: str = DEFAULT_CAPTURE_MODE
        self._main: Callable[..., Any] | None = None
        self._flow: Flow[Any, Any] | None = None
        self._defaults: dict[str, Any] = {}
        self._specials: tuple[str, ...] = ()
        self._lifecycle = RunLifecycle(self._create_run, self._observers_for_deployment)
        #: The run this experiment started most recently in this process (also when it failed).
        self.last_run: Run | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into served flow-run processes (with its observers, which must pickle too).
        state = dict(self.__dict__)
        state["last_run"] = None
        return state

    # --- defining the experiment -------------------------------------------------------------

    def main(self, function: Callable[..., Any] | None = None, **flow_options: Any) -> Any:
        """Decorator: make ``function`` the experiment's main function and return its flow.

        Its parameters with defaults are the config and the Prefect flow's parameters; a
        ``seed`` parameter is added unless declared. Parameters named ``_run``, ``_config``,
        ``_seed`` or ``_log`` receive the run, its config, its seed and its logger. Keyword
        arguments are passed to :func:`prefect.flow`, e.g.
        ``@ex.main(timeout_seconds=3600, retries=2)``.
        """
        if function is None:
            return lambda fn: self.main(fn, **flow_options)
        self._main = function
        self._flow = self._build_flow(function, flow_options)
        return self._flow

    def automain(self, function: Callable[..., Any] | None = None, **flow_options: Any) -> Any:
        """Like :meth:`main`, and when the defining module is run as a script, run the command line."""
        if function is None:
            return lambda fn: self.automain(fn, **flow_options)
        built = self.main(function, **flow_options)
        if function.__module__ == "__main__":
            self.run_commandline()
            sys.exit(0)
        return built

    @property
    def flow(self) -> Flow[Any, Any]:
        """The Prefect flow running the main function: serve it, deploy it, call it."""
        if self._flow is None:
            raise RuntimeError(f"experiment {self.name!r} has no main function (use @ex.main)")
        return self._flow

    @property
    def config(self) -> dict[str, Any]:
        """The default config: the main function's parameters and their defaults."""
        self.flow  # noqa: B018  (raises without a main function)
        return copy.deepcopy(self._defaults)

    def _build_flow(self, function: Callable[..., Any], flow_options: dict[str, Any]) -> Flow[Any, Any]:
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # unresolvable forward references: fall back to the raw annotations
            hints = {}
        parameters = []
        specials = []
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{function.__name__}: *args and **kwargs cannot be config parameters")
            if parameter.name in SPECIAL_ARGUMENTS:
                specials.append(parameter.name)
                continue
            if parameter.name.startswith("_"):
                raise TypeError(f"{function.__name__}: unknown special argument {parameter.name!r}")
            annotation = hints.get(parameter.name, parameter.annotation)
            parameters.append(parameter.replace(kind=parameter.KEYWORD_ONLY, annotation=annotation))
        if not any(parameter.name == "seed" for parameter in parameters):
            parameters.append(
                inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=int | None)
            )
        signature = inspect.Signature(parameters)
        self._specials = tuple(specials)
        self._defaults = {
            parameter.name: parameter.default
            for parameter in parameters
            if parameter.default is not inspect.Parameter.empty
        }
        main_parameters = {parameter.name for parameter in parameters} - (
            set() if "seed" in inspect.signature(function).parameters else {"seed"}
        )

        def body(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return self._execute(function, dict(bound.arguments), main_parameters)

        body.__signature__ = signature  # type: ignore[attr-defined]
        body.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(body, attribute, getattr(function, attribute))
        if self.name is None:
            self.name = function.__name__
        hooks = self._lifecycle
        options: dict[str, Any] = {
            "name": self.name,
            "on_running": [hooks.on_running],
            "on_completion": [hooks.on_completion],
            "on_failure": [hooks.on_failure],
            "on_crashed": [hooks.on_crashed],
            "on_cancellation": [hooks.on_cancellation],
            **flow_options,
        }
        try:
            return Flow(body, **options)
        except ValueError:
            if "validate_parameters" in flow_options:
                raise
        # Prefect cannot build its validator for some defaults (a numpy array compares
        # ambiguously); such an experiment still runs, with its parameters unvalidated.
        logger.warning(
            "experiment %r: Prefect cannot validate these config parameters; running unvalidated",
            self.name,
        )
        return Flow(body, validate_parameters=False, **options)

    # --- inside a run -----------------------------------------------------------------------

    def _execute(
        self, function: Callable[..., Any], params: dict[str, Any], main_parameters: set[str]
    ) -> Any:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        run = self._lifecycle.live_run(context.flow_run.id) if context and context.flow_run else None
        if run is None:
            raise RuntimeError("the experiment run could not start: see the on_running hook's error above")
        if run.start_error is not None:
            raise run.start_error
        seed = run.config["seed"]
        if params.get("seed") is None:
            params["seed"] = seed
        _seed_generators(seed)
        arguments = {name: value for name, value in params.items() if name in main_parameters}
        specials = {"_run": run, "_config": run.config, "_seed": seed, "_log": run.logger}
        arguments.update({name: specials[name] for name in self._specials})
        tokens = run.bind_context()
        try:
            result = function(**arguments)
        except BaseException as exc:
            run.exception = exc
            run.fail_trace = format_fail_trace(exc, skip_frames=1)
            raise
        finally:
            for token in reversed(tokens):
                token.var.reset(token)
        run.result = result
        return result

    @property
    def info(self) -> dict[str, Any]:
        """The current run's ``info`` dict; only valid while a run is live."""
        return current_run().info

    def log_scalar(self, name: str, value: Any, step: Any = None) -> None:
        """Record a metric point in the current run (see :meth:`Run.log_scalar`)."""
        current_run().log_scalar(name, value, step)

    def add_artifact(
        self,
        filename: str | os.PathLike[str],
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Store a file with the current run (see :meth:`Run.add_artifact`)."""
        current_run().add_artifact(filename, name, metadata, content_type)

    def add_resource(self, filename: str | os.PathLike[str]) -> None:
        """Record a file as an input of the current run."""
        current_run().add_resource(filename)

    def open_resource(self, filename: str | os.PathLike[str], mode: str = "r") -> IO[Any]:
        """Open a file and record it as an input of the current run."""
        return current_run().open_resource(filename, mode)

    # --- starting runs ------------------------------------------------------------------------

    def run(self, config_updates: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> Run:
        """Run the experiment as a Prefect flow in this process and return the finished run.

        Args:
            config_updates: Values for config parameters; dotted keys reach into dicts.
            options: Sacred's options by long flag, e.g. ``{"--id": "7", "--beat-interval": 1,
                "--file_storage": "my_runs"}``.

        Raises:
            UsageError: unknown options, config keys or invalid values; nothing was run.
            Exception: whatever the main function raised.
        """
        resolved = resolve_options(options)
        params = self._validated_parameters(config_updates)
        observers_from_env()  # a malformed deployment setting fails here, before anything runs
        return self._run(params, resolved, config_updates)

    def _validated_parameters(self, config_updates: dict[str, Any] | None) -> dict[str, Any]:
        params = apply_config_updates(self.config, config_updates or {})
        missing = sorted(
            parameter for parameter in inspect.signature(self.flow).parameters if parameter not in params
        )
        if missing:
            raise UsageError(f"missing value for config parameter(s): {', '.join(missing)}")
        if params.get("seed") is None:
            params["seed"] = new_seed()
        if not self.flow.should_validate_parameters:
            return params
        try:
            validated: dict[str, Any] = self.flow.validate_parameters(params)
        except Exception as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        return validated

    def _run(self, params: dict[str, Any], options: RunOptions, updates: dict[str, Any] | None) -> Run:
        request = _RunRequest(options, updates, params)
        token = _request.set(request)
        try:
            self.flow(**params)
        finally:
            _request.reset(token)
        assert request.run is not None
        return request.run

    def run_commandline(self, argv: list[str] | None = None) -> Run:
        """Parse Sacred's command line (``with KEY=VALUE ...`` and flags) and run.

        Exits with status 2 on a malformed command line, before anything is written, and with
        status 1 when the run fails.
        """
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else self.name or "experiment"
        argv = sys.argv[1:] if argv is None else argv
        try:
            updates, raw_options = parse_command_line(
                argv, prog, inspect.getdoc(self._main), self._config_help()
            )
            options = resolve_options(raw_options)
            params = self._validated_parameters(updates)
            observers_from_env()
        except (UsageError, ObserverConfigError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if options.print_config:
            print(json.dumps(params, indent=2, sort_keys=True, default=repr))
        try:
            run = self._run(params, options, updates)
        except Exception as exc:
            print(f"{prog}: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        for name, where in run.locations():
            print(f"Run {run._id} ({run.status}) stored by {name}: {where}")
        return run

    def _config_help(self) -> str:
        lines = ["config (set with 'with KEY=VALUE'):"]
        for key, value in self.config.items():
            lines.append(f"  {key} = {value!r}")
        return "\n".join(lines)

    # --- called by the lifecycle hooks ----------------------------------------------------------

    def _observers_for_deployment(self) -> list[ObserverLike]:
        """Observers of a run started without ``ex.run``: from code and ``PREFECT_SACRED_OBSERVERS``."""
        return [*self.observers, *observers_from_env()]

    def _observers_for(self, options: RunOptions) -> tuple[list[ObserverLike], ObserverError | None]:
        if options.unobserved:
            return [], None
        try:
            return [*self._observers_for_deployment(), *options.observers, *_context_observers.get()], None
        except ObserverConfigError as exc:
            # The run still starts for the observers from code, which then record this failure.
            error = ObserverError(f"{OBSERVERS_ENV_VAR}: {exc}")
            return [*self.observers, *options.observers, *_context_observers.get()], error

    def _typed(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """A deployment run's JSON parameters as the main function will receive them."""
        if self._flow is not None and self._flow.should_validate_parameters:
            try:
                return dict(self._flow.validate_parameters(dict(parameters)))
            except Exception:  # Prefect will report it when it calls the flow
                pass
        return dict(parameters)

    def _create_run(self, flow_run: FlowRun) -> Run:
        request = _request.get()
        if request is not None and request.run is None:
            options = request.options
        else:  # a deployment, a schedule, the UI, or the flow called directly
            request, options = None, RunOptions()
        observers, setup_error = self._observers_for(options)
        config = dict(request.params) if request is not None else self._typed(flow_run.parameters)
        if config.get("seed") is None:
            config["seed"] = new_seed()
        meta: dict[str, Any] = {
            "command": self._main.__name__ if self._main else "main",
            "options": options.recorded,
            "prefect": {
                "flow_run_id": str(flow_run.id),
                "flow_run_name": flow_run.name,
                "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
                "tags": list(flow_run.tags),
                "ui_url": prefect_api.ui_url(flow_run.id),
            },
        }
        if options.comment is not None:
            meta["comment"] = options.comment
        if options.priority is not None:
            meta["priority"] = options.priority
        if request is not None and request.config_updates:
            meta["config_updates"] = request.config_updates
        name = options.name or self.name or "experiment"
        run = Run(
            experiment_info=gather_experiment_info(name, self.base_dir, self.mainfile),
            host_info=gather_host_info(self.captured_env),
            meta_info=meta,
            config=config,
            command=meta["command"],
            observers=_claim(observers),
            beat_interval=options.beat_interval if options.beat_interval is not None else self.beat_interval,
            capture_mode=(options.capture or self.capture_mode) if observers else "no",
            captured_out_filter=self.captured_out_filter,
            _id=options.id,
        )
        run.start_error = setup_error
        run.on_finish = _release
        self.last_run = run
        if request is not None:
            request.run = run
        return run


def _claim(observers: list[ObserverLike]) -> list[ObserverLike]:
    claimed = []
    with _busy_lock:
        for observer in observers:
            if id(observer) in _busy_observers:
                observer = copy.copy(observer)
            _busy_observers.add(id(observer))
            claimed.append(observer)
    return claimed


def _release(run: Run) -> None:
    with _busy_lock:
        for observer in run.observers:
            _busy_observers.discard(id(observer))


def new_seed() -> int:
    return random.SystemRandom().randint(0, 2**31 - 1)


def _seed_generators(seed: int) -> None:
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)
