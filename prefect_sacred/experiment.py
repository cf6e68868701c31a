"""``Experiment``: a Sacred experiment whose main function runs as a Prefect flow."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from typing import IO, Any

from prefect import Flow

from prefect_sacred.config.assemble import Assembled, ConfigError, assemble, silent_log
from prefect_sacred.config.captured import CapturedFunction
from prefect_sacred.config.ingredient import Ingredient
from prefect_sacred.config.paths import nest
from prefect_sacred.config.printing import (
    format_config,
    named_configs_printer,
    print_config,
    print_dependencies,
    save_config,
)
from prefect_sacred.config.scope import ConfigDict
from prefect_sacred.core.info import gather_experiment_info
from prefect_sacred.core.run import Run, current_run
from prefect_sacred.flows.commandline import (
    apply_loglevel,
    check_clean,
    config_help,
    parse_command_line,
    print_help,
)
from prefect_sacred.flows.flow_runs import create_run, deployment_observers
from prefect_sacred.flows.lifecycle import RunLifecycle
from prefect_sacred.flows.options import UsageError, resolve_options, sacred_options
from prefect_sacred.flows.parameters import build_flow, check_main_values, flow_signature, main_parameters
from prefect_sacred.flows.queued import queue_from_commandline, queue_options, queue_run
from prefect_sacred.flows.starting import (
    CommandRun,
    Prepared,
    RunRequest,
    Unsupported,
    call_command,
    current_request,
    observing,
)
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.prefect_ui.observer import rebuild_with_prefect_ui
from prefect_sacred.observers.registry import ObserverConfigError, observers_from_env
from prefect_sacred.settings import SETTINGS

if typing.TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

logger = logging.getLogger("prefect_sacred")

__all__ = ["CommandRun", "Experiment", "observing"]

#: Arguments the main function may declare to receive run objects instead of config values.
SPECIAL_ARGUMENTS = ("_run", "_config", "_seed", "_log", "_rnd")


class Experiment(Ingredient):
    """An experiment: a main function, its config, and the observers that record its runs.

    Sacred's API: config scopes (``@ex.config``), ``ex.add_config``, named configs, captured
    functions, commands and ingredients work as in Sacred 0.8.7; the main function runs as a
    Prefect flow whose parameters are the config's top-level entries.

    Example:
        ```python
        ex = Experiment("mnist")
        ex.observers.append(FileStorageObserver("my_runs"))

        @ex.config
        def cfg():
            epochs = 3  # passes over the data
            lr = 0.1 / epochs

        @ex.automain
        def train(epochs, lr, _run):
            for epoch in range(epochs):
                _run.log_scalar("loss", 1 / (epoch + 1))
            return 0.9
        ```

    Args:
        name: The experiment's name (default: the main file's name without ``.py``). The
            Prefect flow is named after it.
        ingredients: The ingredients it uses.
        interactive: Allow an experiment without a main file (a notebook); name it then.
        base_dir: Where the experiment's sources live (default: the directory of the file that
            creates the experiment). Imported modules under it are recorded as sources.
        additional_host_info: Not supported; record such facts with ``captured_env`` or in
            ``_run.info``.
        additional_cli_options: Not supported; see ``prefect_sacred.observers.registry`` for
            observer flags.
        save_git_info: Record the git repository, commit and dirtiness of the sources.
        captured_env: Names of environment variables to record in the host info.
    """

    def __init__(
        self,
        name: str | None = None,
        ingredients: Sequence[Ingredient] = (),
        interactive: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        additional_host_info: Sequence[Any] | None = None,
        additional_cli_options: Sequence[Any] | None = None,
        save_git_info: bool = True,
        *,
        captured_env: tuple[str, ...] | list[str] = (),
    ) -> None:
        if additional_host_info:
            raise Unsupported(
                "Sacred's additional_host_info is not supported: name environment variables with "
                "captured_env=[...] or record facts in _run.info"
            )
        if additional_cli_options:
            raise Unsupported(
                "Sacred's additional_cli_options are not supported: register observer flags with "
                "prefect_sacred.observers.registry.register_observer_option"
            )
        globs = sys._getframe(1).f_globals
        caller_file = globs.get("__file__")
        if name is None and caller_file and not interactive:
            name = os.path.splitext(os.path.basename(caller_file))[0]
        super().__init__(name or "", ingredients, interactive, globs, base_dir, save_git_info)
        self.captured_env = tuple(captured_env)
        self.observers: list[ObserverLike] = []
        self.captured_out_filter: Callable[[str], str] | None = None
        self._beat_interval: float | None = None
        #: The most seconds the end of a run waits for its observers (None: the environment's
        #: ``PREFECT_SACRED_JOIN_TIMEOUT``, else 30); what is left stays in the run's journal.
        self.join_timeout: float | None = None
        self._capture_mode: str | None = None
        self.default_command: str | None = None
        self._main: CapturedFunction | None = None
        self._flow: Flow[Any, Any] | None = None
        self._flow_options: dict[str, Any] = {}
        self._main_defaults: dict[str, Any] = {}
        self._main_annotations: dict[str, Any] = {}
        self._prepared: dict[Any, Prepared] = {}
        #: Functions called with the options before each run (:meth:`option_hook`).
        self.option_hooks: list[Callable[..., Any]] = []
        rebuild = rebuild_with_prefect_ui(self._observers_for_deployment)
        self._lifecycle = RunLifecycle(self._create_run, rebuild)
        #: The run this experiment started most recently in this process (also when it failed).
        self.last_run: Run | None = None
        # Sacred's four built-in commands are the first captured functions: keeping that order
        # keeps every captured function's ``_rnd`` stream Sacred's for the same seed.
        for builtin in (print_config, print_dependencies, save_config, named_configs_printer(self)):
            self.command(builtin, unobserved=True)

    @property
    def name(self) -> str:
        """The experiment's name (Sacred's ``path``)."""
        return str(self.path)

    @name.setter
    def name(self, value: str) -> None:
        self.path = value

    @property
    def capture_mode(self) -> str:
        """How its runs capture output: ``fd``, ``sys`` or ``no`` (default ``SETTINGS.CAPTURE_MODE``)."""
        return self._capture_mode or str(SETTINGS.CAPTURE_MODE)

    @capture_mode.setter
    def capture_mode(self, value: str) -> None:
        self._capture_mode = value

    @property
    def beat_interval(self) -> float:
        """Seconds between two beats of its runs (default ``SETTINGS.DEFAULT_BEAT_INTERVAL``)."""
        if self._beat_interval is not None:
            return self._beat_interval
        return float(SETTINGS.DEFAULT_BEAT_INTERVAL)

    @beat_interval.setter
    def beat_interval(self, value: float) -> None:
        self._beat_interval = value

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into served flow-run processes (with its observers, which must pickle too).
        state = super().__getstate__()
        state["last_run"] = None
        state["_prepared"] = {}
        return state

    # --- defining the experiment -------------------------------------------------------------

    def main(self, function: Callable[..., Any] | None = None, **flow_options: Any) -> Any:
        """Decorator: make ``function`` the experiment's main function and return its flow.

        Its arguments are filled from the config (it is a captured function); its parameters
        with defaults are config entries too. ``_run``, ``_config``, ``_seed``, ``_rnd`` and
        ``_log`` receive the run, its config, a seed, a random generator and a logger. Keyword
        arguments are passed to :func:`prefect.flow`, e.g.
        ``@ex.main(timeout_seconds=3600, retries=2)``.
        """
        if function is None:
            return lambda fn: self.main(fn, **flow_options)
        defaults, annotations = main_parameters(function, SPECIAL_ARGUMENTS)
        self._main = self.command(function)
        self.default_command = self._main.__name__
        self._main_defaults, self._main_annotations = defaults, annotations
        if not self.path:
            self.path = function.__name__
        self._flow_options = flow_options
        self._flow = self._build_flow()
        return self._flow

    def automain(self, function: Callable[..., Any] | None = None, **flow_options: Any) -> Any:
        """Like :meth:`main`, and when the defining module is run as a script, run the command line.

        As in Sacred, the script goes on after the run (a failed run exits with status 1).
        """
        if function is None:
            return lambda fn: self.automain(fn, **flow_options)
        built = self.main(function, **flow_options)
        if function.__module__ == "__main__":
            self.run_commandline()
        return built

    @property
    def flow(self) -> Flow[Any, Any]:
        """The Prefect flow running the main function: serve it, deploy it, call it."""
        if self._flow is None:
            raise RuntimeError(
                f"experiment {self.name!r} has no main function (use @ex.main or @ex.automain)"
            )
        return self._flow

    def task(self, capture: str | None = None, **task_options: Any) -> Any:
        """The main function as a Prefect task: each task run (a trial of a sweep) is an observed run.

        ``train = ex.task(retries=1)`` then ``train.map(lr=[0.1, 0.2])`` in any flow; see
        :func:`prefect_sacred.tasks.task.experiment_task`.
        """
        from prefect_sacred.tasks.task import experiment_task

        return experiment_task(self, capture, **task_options)

    def _definitions_changed(self) -> None:
        if self._flow is not None:  # a config added after the main function: refresh the form
            self._flow = self._build_flow(self._flow)

    def _extra_configs(self) -> list[ConfigDict]:
        return [ConfigDict(self._main_defaults)] if self._main_defaults else []

    def assemble(
        self,
        config_updates: dict[str, Any] | None = None,
        named_configs: Sequence[str] = (),
        command: str | None = None,
        force: bool = False,
        log: Any = None,
    ) -> Assembled:
        """The config of a run with these updates and named configs (nothing is run).

        Raises:
            UsageError: an unknown named config or entry, or a config scope that failed.
        """
        try:
            return assemble(
                self,
                config_updates,
                named_configs,
                command_name=command or self.default_command or "main",
                extra=self._extra_configs(),
                force=force,
                log=log or self.logger,
            )
        except ConfigError as exc:  # a UsageError too, of Sacred's type (ConfigAddedError...)
            raise exc.with_traceback(None) from None
        except KeyError as exc:  # a key no store can keep (normalize)
            raise UsageError(str(exc.args[0] if exc.args else exc)) from None

    def _build_flow(self, existing: Flow[Any, Any] | None = None) -> Flow[Any, Any]:
        assert self._main is not None
        try:
            defaults = self.assemble(force=True, log=silent_log())
            config, docs = dict(defaults.config), defaults.mods.docs
        except Exception as exc:  # the form shows what it can; the run reports the error
            logger.warning("experiment %r: its config cannot be evaluated yet: %s", self.name, exc)
            config, docs = dict(self._main_defaults), {}
        return build_flow(
            self._main.function,
            self._execute,
            name=self.name,
            signature=flow_signature(
                config, self._main_annotations, [n for n, _ in self.gather_named_configs()]
            ),
            docs=docs,
            hooks=self._lifecycle,
            flow_options=self._flow_options,
            existing=existing,
            config_doc=config.get("__doc__") if isinstance(config.get("__doc__"), str) else None,
        )

    # --- inside a run -----------------------------------------------------------------------

    def _execute(self) -> Any:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        flow_run_id = context.flow_run.id if context and context.flow_run else None
        run = self._lifecycle.live_run(flow_run_id) if flow_run_id is not None else None
        prepared = self._prepared.get(flow_run_id)  # kept for Prefect's retries of the body
        if run is None or prepared is None:
            raise RuntimeError("the experiment run could not start: see the on_running hook's error above")
        if run.start_error is not None:  # a Failed state: one ERROR line (the hook's), no traceback
            from prefect.states import Failed

            return Failed(message=str(run.start_error), data=run.start_error)
        if prepared.error is not None:
            raise prepared.error
        assert prepared.assembled is not None
        return self._call_command(run, prepared.assembled, prepared.command)

    def _call_command(self, run: Any, assembled: Assembled, command: str) -> Any:
        return call_command(self, run, assembled, command)

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

    def run(
        self,
        command_name: str | dict[str, Any] | None = None,
        config_updates: dict[str, Any] | None = None,
        named_configs: Sequence[str] = (),
        info: dict[str, Any] | None = None,
        meta_info: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Run:
        """Run the main function (or the command ``command_name``) as a Prefect flow; return the run.

        Args:
            command_name: A command to run instead of the main function (``ex.run(updates)``
                with a dict first also works, as before).
            config_updates: Fixed config values; dotted keys reach into dicts and ingredients.
            named_configs: Named configs (``NAME``, ``ingredient.NAME``) or config files, applied
                in order.
            info: Initial entries of ``run.info``.
            meta_info: Entries added to the run's meta info.
            options: Sacred's options by long flag, e.g. ``{"--id": "7", "--beat-interval": 1,
                "--file_storage": "my_runs"}``.

        Raises:
            UsageError: unknown options, commands, named configs, config keys or invalid values;
                nothing was run.
            Exception: whatever the main function raised.
        """
        if isinstance(command_name, dict):  # the earlier signature: run(config_updates, options)
            command_name, config_updates, options = None, command_name, options or config_updates
        resolved = resolve_options(self._hooked(options))
        command = self._command_name(command_name)
        assembled = self.assemble(config_updates, named_configs, command, force=resolved.force)
        self._check_values(assembled, command)
        observers_from_env()  # a malformed deployment setting fails here, before anything runs
        return self._run(RunRequest(resolved, config_updates, assembled, command, info, meta_info))

    def queue(
        self, config_updates: dict[str, Any] | None = None, options: dict[str, Any] | None = None
    ) -> Any:
        """Queue a run: create a flow run of the experiment's deployment, recorded QUEUED.

        It starts when the deployment's serve process or worker picks it up, and keeps its
        ``_id``: the QUEUED record becomes RUNNING. Returns a ``QueuedRun`` (``_id``,
        ``flow_run_id``, ``config``).

        Raises:
            UsageError: the flow has no deployment, or the config or options are malformed.
        """
        resolved = queue_options(self._hooked(options))
        command = self._command_name(None)
        assembled = self.assemble(config_updates, (), command, force=resolved.force)
        self._check_values(assembled, command)
        return queue_run(self, RunRequest(resolved, config_updates, assembled, command))

    def serve(self, name: str, watch: bool = True, **serve_options: Any) -> None:
        """Serve the flow as deployment ``name`` (``Flow.serve``), with a watcher beside it.

        The watcher records runs created by the UI, ``prefect deployment run``, schedules or
        the API as QUEUED as soon as they exist (see ``prefect_sacred.watch``). Call it under
        ``if __name__ == "__main__":`` (Prefect re-imports the main module in run processes).
        """
        if watch:
            from prefect_sacred.watch.watcher import Watcher

            Watcher(self).start()
        self.flow.serve(name=name, **serve_options)

    def _command_name(self, command_name: str | None) -> str:
        if command_name is None:
            if self.default_command is None:
                raise UsageError(
                    f"experiment {self.name!r} has no main function (use @ex.main or @ex.automain)"
                )
            return self.default_command
        commands = dict(self.gather_commands())
        if command_name not in commands:
            raise UsageError(f"no command {command_name!r} (commands: {', '.join(commands)})")
        return command_name

    def _check_values(self, assembled: Assembled, command: str | None = None) -> None:
        """Values for every argument of the main function, checked against its annotations."""
        runs_main = self._main is not None and command in (None, self.default_command)
        check_main_values(
            assembled.config,
            self._main.arguments if self._main is not None and runs_main else [],
            SPECIAL_ARGUMENTS,
            self._main_defaults,
            self._main_annotations
            if self._flow is not None and self._flow.should_validate_parameters
            else {},
        )

    def _run(self, request: RunRequest) -> Run:
        if request.command in self._unobserved():
            return self._run_unobserved(request)  # type: ignore[return-value]
        parameters = {
            key: value
            for key, value in request.assembled.config.items()
            if key in inspect.signature(self.flow.fn).parameters
        }
        token = current_request.set(request)
        try:
            self.flow(**parameters)
        finally:
            current_request.reset(token)
        assert request.run is not None
        return request.run

    def _unobserved(self) -> set[str]:
        names = set()
        for ingredient, _ in self.traverse_ingredients():
            prefix = "" if ingredient is self else f"{ingredient.path}."
            names |= {prefix + name for name in ingredient.unobserved_commands}
        return names

    def _run_unobserved(self, request: RunRequest) -> CommandRun:
        """Commands declared ``unobserved`` (``print_config`` ...) run here, without a flow."""
        run = CommandRun(
            config=request.assembled.config,
            config_modifications=request.assembled.mods,
            experiment_info=self.experiment_info(),
            meta_info={"command": request.command, "named_configs": request.assembled.named_configs},
            info=dict(request.info or {}),
            logger=self.logger or logging.getLogger(self.name),
        )
        run.result = self._call_command(run, request.assembled, request.command)
        run.status = "COMPLETED"
        return run

    def option_hook(self, function: Callable[..., Any]) -> Any:
        """Decorator: ``function(options)`` is called before each run started by ``ex.run``, the
        command line or ``ex.queue``, with Sacred's options (every flag by its long name, None or
        False when not given); what it changes in the ``--`` flags takes effect, as in Sacred.

        Raises:
            KeyError: the function has no argument named ``options`` (Sacred's message).
        """
        if "options" not in inspect.signature(function).parameters:
            raise KeyError(
                "option_hook functions must have an argument called 'options', but got "
                f"{list(inspect.signature(function).parameters)}"
            )
        self.option_hooks.append(function)
        return function

    def _hooked(self, options: dict[str, Any] | None) -> dict[str, Any] | None:
        """``options`` as the option hooks leave them."""
        if not self.option_hooks:
            return options
        full = sacred_options(dict(options or {}))
        for hook in self.option_hooks:
            hook(options=full)
        return {key: value for key, value in full.items() if key.startswith("-")}

    @property
    def current_run(self) -> Run | None:
        """The run live in this context, else the last run this experiment started (Sacred's)."""
        try:
            return current_run()
        except RuntimeError:
            return self.last_run

    def get_experiment_info(self) -> dict[str, Any]:
        """Sacred's name for :meth:`experiment_info`."""
        return self.experiment_info()

    def experiment_info(self) -> dict[str, Any]:
        """Sacred's ``experiment`` record of this experiment: name, sources, dependencies..."""
        return gather_experiment_info(
            self.name,
            self.base_dir,
            self.mainfile,
            ingredients=[ingredient for ingredient, _ in self.traverse_ingredients()],
            save_git_info=self.save_git_info,
        )

    def run_commandline(self, argv: list[str] | None = None) -> Run:
        """Parse Sacred's command line (``[COMMAND] [with UPDATE ...] [flags]``) and run.

        Exits with status 2 on a malformed command line, before anything is written, and with
        status 1 when the run fails.
        """
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else self.name or "experiment"
        argv = sys.argv[1:] if argv is None else argv
        try:
            main_doc = inspect.getdoc(self._main.function) if self._main is not None else None
            parsed = parse_command_line(argv, prog, main_doc or self.doc or None, config_help(self))
            if parsed.command == "help":
                print_help(self, parsed.help_target)
                raise SystemExit(0)
            options = resolve_options(self._hooked(parsed.options))
            command = self._command_name(parsed.command)
            assembled = self.assemble(parsed.updates, parsed.named_configs, command, force=options.force)
            self._check_values(assembled, command)
            observers_from_env()  # a malformed deployment setting fails here, before anything runs
            if options.enforce_clean:
                check_clean(self)
        except (UsageError, ObserverConfigError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if options.loglevel is not None:
            apply_loglevel(self, options.loglevel)
        if options.print_config:
            print(format_config(assembled.config, assembled.mods))
        request = RunRequest(options, nest(parsed.updates), assembled, command, option_words=parsed.words)
        if options.queue:
            return queue_from_commandline(self, request, prog)  # type: ignore[return-value]
        try:
            run = self._run(request)
        except Exception as exc:
            if options.debug:
                traceback.print_exception(exc)
            if options.pdb:
                import pdb

                pdb.post_mortem(exc.__traceback__)
            print(f"{prog}: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        for name, where in run.locations():
            print(f"Run {run._id} ({run.status}) stored by {name}: {where}")
        return run

    # --- called by the lifecycle hooks ----------------------------------------------------------

    def _observers_for_deployment(self) -> list[ObserverLike]:
        return deployment_observers(self)

    def _create_run(self, flow_run: FlowRun) -> Run:
        return create_run(self, flow_run)
