"""Sacred's command line: ``python my_experiment.py [COMMAND] [with UPDATE ...] [options]``.

An ``UPDATE`` is ``KEY=VALUE`` (a config update) or the name of a named config (or a config
file) to apply, in order.

The run options (``-i``, ``-c``, ``-b`` ...) are declared here; observer flags (``-F``, ``-m``
...) come from the observer registry, where each observer module registers its own. Everything
is checked before the run starts: a bad flag, value or config key is one line on stderr and exit
status 2, and nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import os
import pydoc
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_sacred.flows.capture import CAPTURE_MODES
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.registry import ObserverConfigError, observer_options
from prefect_sacred.utils import redact

if TYPE_CHECKING:
    from prefect_sacred.flows.experiment import Experiment
    from prefect_sacred.flows.run import Run
    from prefect_sacred.flows.starting import CommandRun

__all__ = [
    "CommandLine",
    "RunOptions",
    "UsageError",
    "apply_loglevel",
    "check_clean",
    "parse_command_line",
    "resolve_options",
    "run_commandline",
    "sacred_options",
]


class UsageError(ValueError):
    """The command line or the options of ``ex.run`` are malformed."""


@dataclass(frozen=True)
class _RunOption:
    short: str
    long: str
    metavar: str | None  # None: a flag without a value
    help: str
    type: Any = str


RUN_OPTIONS = (
    _RunOption("-i", "--id", "ID", "Set the id of the run."),
    _RunOption("-c", "--comment", "COMMENT", "Add a comment to the run."),
    _RunOption("-u", "--unobserved", None, "Run without observers."),
    _RunOption(
        "-q", "--queue", None, "Only queue the run: a flow run of the deployment, recorded QUEUED."
    ),
    _RunOption("-b", "--beat-interval", "SECONDS", "Seconds between heartbeats (default 10).", float),
    _RunOption("-C", "--capture", "MODE", f"Output capture mode: {', '.join(CAPTURE_MODES)}."),
    _RunOption("-n", "--name", "NAME", "Set the name of the experiment for this run."),
    _RunOption("-P", "--priority", "NUMBER", "Priority of the run, kept in its meta info.", float),
    _RunOption("-p", "--print-config", None, "Print the configuration before running."),
    _RunOption(
        "-l", "--loglevel", "LEVEL", "Level of the run's log (DEBUG, INFO, WARNING, ... or a number)."
    ),
    _RunOption("-d", "--debug", None, "Debug mode: a failure prints its whole traceback."),
    _RunOption("-D", "--pdb", None, "Start the Python debugger (pdb) at the point of a failure."),
    _RunOption("-e", "--enforce_clean", None, "Refuse to run when a repository of the sources is dirty."),
    _RunOption("-f", "--force", None, "Accept config entries that nothing defines or reads."),
)

#: Sacred 0.8.7's command-line options: ``meta.options`` holds each (docopt's shape), set or not.
_SACRED_OPTION_DEFAULTS: dict[str, Any] = {
    "--beat-interval": None,
    "--capture": None,
    "--comment": None,
    "--debug": False,
    "--enforce_clean": False,
    "--file_storage": None,
    "--force": False,
    "--help": False,
    "--id": None,
    "--loglevel": None,
    "--mongo_db": None,
    "--name": None,
    "--pdb": False,
    "--print-config": False,
    "--priority": None,
    "--queue": False,
    "--s3": None,
    "--sql": None,
    "--tiny_db": None,
    "--unobserved": False,
    "COMMAND": None,
    "UPDATE": [],
    "help": False,
    "with": False,
}


def sacred_options(recorded: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sacred's ``meta.options``: every option with its default, updated with what was given."""
    options = dict(_SACRED_OPTION_DEFAULTS)
    options["UPDATE"] = []
    options.update(recorded)
    options.update(extra or {})
    return options


@dataclass
class RunOptions:
    """Options of one run, from the command line or ``ex.run(options=...)``."""

    id: Any = None
    comment: str | None = None
    unobserved: bool = False
    queue: bool = False
    beat_interval: float | None = None
    capture: str | None = None
    name: str | None = None
    priority: float | None = None
    print_config: bool = False
    loglevel: str | None = None
    debug: bool = False
    pdb: bool = False
    enforce_clean: bool = False
    force: bool = False
    observers: list[ObserverLike] = field(default_factory=list)
    #: ``(long flag, value)`` of each observer in ``observers`` (a queued run's travel with it).
    observer_flags: list[tuple[str, str]] = field(default_factory=list)
    #: The flags given, by long name, as given (strings from a command line), credentials removed.
    recorded: dict[str, Any] = field(default_factory=dict)


def resolve_options(options: dict[str, Any] | None) -> RunOptions:
    """Check and convert ``{"--beat-interval": "0.5", "-F": "my_runs", ...}``.

    Keys are Sacred's long flags (or their short forms); observer flags take a value or a list.
    """
    by_name: dict[str, _RunOption] = {}
    for option in RUN_OPTIONS:
        by_name[option.short] = by_name[option.long] = option
    observer_flags = {}
    for observer_option in observer_options():
        observer_flags[observer_option.short] = observer_flags[observer_option.long] = observer_option
    resolved = RunOptions()
    for key, value in (options or {}).items():
        if value is None or value is False:
            continue
        if key in observer_flags:
            spec = observer_flags[key]
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                try:
                    resolved.observers.append(spec.factory(str(item)))
                    resolved.observer_flags.append((spec.long, str(item)))
                except ObserverConfigError as exc:
                    raise UsageError(f"argument {spec.short}/{spec.long}: {exc}") from None
            shown = [redact(str(item)) for item in values]
            resolved.recorded[spec.long] = shown[0] if len(shown) == 1 else shown
            continue
        if key not in by_name:
            raise UsageError(f"unknown option {key!r}")
        option = by_name[key]
        given = value
        if option.metavar is None:
            value = bool(value)
        else:
            try:
                value = option.type(value)
            except (TypeError, ValueError):
                raise UsageError(f"argument {option.short}/{option.long}: invalid value {value!r}")
        if option.long == "--capture" and value not in CAPTURE_MODES:
            raise UsageError(
                f"argument -C/--capture: invalid choice {value!r} (choose from {', '.join(CAPTURE_MODES)})"
            )
        if option.long == "--loglevel":
            value = _log_level(str(value))
        setattr(resolved, option.long.lstrip("-").replace("-", "_"), value)
        resolved.recorded[option.long] = given if option.metavar is not None else True
    return resolved


def _log_level(text: str) -> str:
    import logging

    if text.isdigit() or text.upper() in logging.getLevelNamesMapping():
        return text.upper()
    raise UsageError(
        f"argument -l/--loglevel: invalid level {text!r} (DEBUG, INFO, WARNING, ERROR or a number)"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage and exits; we want one line
        raise UsageError(message)


@dataclass
class CommandLine:
    """A parsed command line."""

    command: str | None
    updates: dict[str, Any]
    named_configs: list[str]
    options: dict[str, Any]
    #: Sacred's ``COMMAND``, ``UPDATE``, ``help`` and ``with`` entries of ``meta.options``.
    words: dict[str, Any]
    #: ``help COMMAND``: the command to describe.
    help_target: str | None = None


def parse_command_line(
    argv: list[str], prog: str, description: str | None = None, config_help: str = ""
) -> CommandLine:
    """Split ``argv`` into the command, config updates, named configs and options."""
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [COMMAND] [with UPDATE ...] [options]",
        description=description,
        epilog=config_help,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "updates",
        nargs="*",
        metavar="[COMMAND] with UPDATE",
        help="A command to run instead of the main function; config updates KEY=VALUE and named configs.",
    )
    for option in RUN_OPTIONS:
        if option.metavar is None:
            parser.add_argument(
                option.short, option.long, dest=option.long, action="store_true", help=option.help
            )
        else:
            parser.add_argument(
                option.short, option.long, dest=option.long, metavar=option.metavar, help=option.help
            )
    for observer_option in observer_options():
        parser.add_argument(
            observer_option.short,
            observer_option.long,
            dest=observer_option.long,
            metavar=observer_option.metavar,
            action="append",
            help=observer_option.help,
        )
    namespace = vars(parser.parse_intermixed_args(argv))
    words = namespace.pop("updates")
    command = help_target = None
    if words and words[0] != "with":
        command, words = words[0], words[1:]
    if command == "help" and words and words[0] != "with":
        help_target, words = words[0], words[1:]
    if words and words[0] != "with":
        raise UsageError(f"unexpected argument {words[0]!r} (config updates follow 'with')")
    updates: dict[str, Any] = {}
    named: list[str] = []
    given = [word for word in words[1:] if word != "with"]
    for word in given:
        key, sep, text = word.partition("=")
        if not sep:
            if not word.strip() or any(char.isspace() for char in word):
                raise UsageError(f"malformed config update {word!r} (expected KEY=VALUE or a named config)")
            named.append(word)
            continue
        if not key.strip():
            raise UsageError(f"malformed config update {word!r} (expected KEY=VALUE)")
        updates[key.strip()] = parse_value(text)
    options = {key: value for key, value in namespace.items() if value not in (None, False)}
    shape = {"COMMAND": command, "UPDATE": given, "help": False, "with": bool(words)}
    return CommandLine(command, updates, named, options, shape, help_target)


def parse_value(text: str) -> Any:
    """A Python or JSON literal; anything else is taken as a plain string, as Sacred does."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_commandline(ex: Experiment, argv: list[str] | None = None) -> Run | CommandRun:
    """Run ``ex`` from Sacred's command line: ``[COMMAND] [with UPDATE ...] [flags]``.

    A malformed command line prints one line and exits with status 2 before anything is
    written; a failed run exits with status 1.
    """
    from prefect_sacred.config.paths import nest
    from prefect_sacred.config.printing import format_config
    from prefect_sacred.flows.starting import RunRequest
    from prefect_sacred.observers.registry import observers_from_env

    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ex.name or "experiment"
    argv = sys.argv[1:] if argv is None else argv
    try:
        main_doc = inspect.getdoc(ex._main.function) if ex._main is not None else None
        parsed = parse_command_line(argv, prog, main_doc or ex.doc or None, _config_help(ex))
        if parsed.command == "help":
            _print_help(ex, parsed.help_target)
            raise SystemExit(0)
        options = resolve_options(parsed.options)
        command = ex._command_name(parsed.command)
        assembled = ex.assemble(parsed.updates, parsed.named_configs, command, force=options.force)
        ex._check_values(assembled, command)
        observers_from_env()  # a malformed deployment setting fails here, before anything runs
        if options.enforce_clean:
            check_clean(ex)
    except (UsageError, ObserverConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if options.loglevel is not None:
        apply_loglevel(ex, options.loglevel)
    if options.print_config:
        print(format_config(assembled.config, assembled.mods))
    request = RunRequest(options, nest(parsed.updates), assembled, command, option_words=parsed.words)
    if options.queue:
        return _queue(ex, request, prog)  # type: ignore[no-any-return]
    try:
        run = ex._run(request)
    except Exception as exc:
        if options.debug:
            import traceback

            traceback.print_exception(exc)
        if options.pdb:
            import pdb

            pdb.post_mortem(exc.__traceback__)
        print(f"{prog}: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    for name, where in run.locations():
        print(f"Run {run._id} ({run.status}) stored by {name}: {where}")
    return run


def apply_loglevel(ex: Experiment, loglevel: str) -> None:
    """Set ``-l/--loglevel`` on the loggers of the run's log (process-wide: one run per process)."""
    level: int | str = int(loglevel) if loglevel.isdigit() else loglevel
    for name in ("prefect.flow_runs", "prefect_sacred", ex.name):
        logging.getLogger(name).setLevel(level)
    if ex.logger is not None:
        ex.logger.setLevel(level)


def _queue(ex: Experiment, request: Any, prog: str) -> Any:
    from prefect_sacred.watch.queueing import queue_run

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


def _config_help(ex: Experiment) -> str:
    lines = ["config (set with 'with KEY=VALUE'):"]
    try:
        assembled = ex.assemble(force=True, log=logging.getLogger("prefect_sacred.silent"))
    except UsageError as exc:
        return f"config: cannot be evaluated: {exc}"
    for key, value in assembled.config.items():
        if key == "seed":
            continue
        doc = assembled.mods.docs.get(key)
        lines.append(f"  {key} = {value!r}" + (f"  # {doc}" if doc else ""))
    commands = [name for name, _ in ex.gather_commands()]
    named = [name for name, _ in ex.gather_named_configs()]
    lines.append("commands: " + ", ".join(commands))
    if named:
        lines.append("named configs (with NAME): " + ", ".join(named))
    return "\n".join(lines)


def _print_help(ex: Experiment, target: str | None) -> None:
    commands = dict(ex.gather_commands())
    if target is None:
        print("commands:")
        for name, function in commands.items():
            summary = (inspect.getdoc(function) or "").strip().split("\n")[0]
            print(f"  {name:<27}{summary}")
        return
    if target not in commands:
        raise UsageError(f"no command {target!r} (commands: {', '.join(commands)})")
    function = commands[target]
    text = pydoc.text.document(getattr(function, "function", function))
    print(re.sub(".\x08", "", text))


def check_clean(ex: Experiment) -> None:
    """``-e/--enforce_clean``: refuse to run from sources a git repository holds uncommitted.

    Raises:
        UsageError: the sources are in no repository, or one has uncommitted changes.
    """
    repositories = ex.experiment_info()["repositories"]
    if not repositories:
        raise UsageError("-e/--enforce_clean: the sources are in no git repository")
    for repository in repositories:
        if repository["dirty"]:
            raise UsageError(f"-e/--enforce_clean: repository {repository['url']} has uncommitted changes")
