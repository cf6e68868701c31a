"""Sacred's command line parsed: ``python my_experiment.py [COMMAND] [with UPDATE ...] [options]``.

An ``UPDATE`` is ``KEY=VALUE`` (a config update) or the name of a named config (or a config
file) to apply, in order.

The run options (``-i``, ``-c``, ``-b`` ...) are declared here; observer flags (``-F``, ``-m``
...) come from the observer registry, where each observer module registers its own. Everything
is checked before the run starts: a bad flag, value or config key is one line on stderr and exit
status 2, and nothing is written anywhere. The driver that runs what was parsed is
:meth:`prefect_sacred.experiment.Experiment.run_commandline`, beside the experiment (as in Sacred).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import pydoc
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_sacred.config.assemble import silent_log
from prefect_sacred.flows.options import RUN_OPTIONS, UsageError
from prefect_sacred.observers.registry import observer_options
from prefect_sacred.settings import SETTINGS

if TYPE_CHECKING:
    from prefect_sacred.flows.experiment_like import ExperimentLike

__all__ = [
    "CommandLine",
    "apply_loglevel",
    "check_clean",
    "config_help",
    "parse_command_line",
    "print_help",
]


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
    """A Python or JSON literal; anything else is taken as a plain string, as Sacred does.

    Raises:
        UsageError: not a literal, with ``SETTINGS.COMMAND_LINE.STRICT_PARSING`` on.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        if SETTINGS.COMMAND_LINE.STRICT_PARSING:
            raise UsageError(
                f"{text!r} is not a Python or JSON literal (SETTINGS.COMMAND_LINE.STRICT_PARSING is on: "
                "quote a string, e.g. 'name=\"value\"')"
            ) from None
        return text


def apply_loglevel(ex: ExperimentLike, loglevel: str) -> None:
    """Set ``-l/--loglevel`` on the loggers of the run's log (process-wide: one run per process)."""
    level: int | str = int(loglevel) if loglevel.isdigit() else loglevel
    # Prefect's lines too: its temporary server's ("prefect") and the hooks' ("prefect.engine").
    for name in ("prefect", "prefect.engine", "prefect.flow_runs", "prefect_sacred", ex.name):
        logging.getLogger(name).setLevel(level)
    if ex.logger is not None:
        ex.logger.setLevel(level)


def config_help(ex: ExperimentLike) -> str:
    lines = ["config (set with 'with KEY=VALUE'):"]
    try:
        assembled = ex.assemble(force=True, log=silent_log())
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


def print_help(ex: ExperimentLike, target: str | None) -> None:
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


def check_clean(ex: ExperimentLike) -> None:
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
