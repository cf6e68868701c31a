"""Sacred's command line: ``python my_experiment.py [with KEY=VALUE ...] [options]``.

The run options (``-i``, ``-c``, ``-b`` ...) are declared here; observer flags (``-F``, ``-m``
...) come from the observer registry, where each observer module registers its own. Everything
is checked before the run starts: a bad flag, value or config key is one line on stderr and exit
status 2, and nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.flows.capture import CAPTURE_MODES
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.registry import ObserverConfigError, observer_options
from prefect_sacred.utils import redact

__all__ = ["RunOptions", "UsageError", "apply_config_updates", "parse_command_line", "resolve_options"]


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
    _RunOption("-b", "--beat-interval", "SECONDS", "Seconds between heartbeats (default 10).", float),
    _RunOption("-C", "--capture", "MODE", f"Output capture mode: {', '.join(CAPTURE_MODES)}."),
    _RunOption("-n", "--name", "NAME", "Set the name of the experiment for this run."),
    _RunOption("-P", "--priority", "NUMBER", "Priority of the run, kept in its meta info.", float),
    _RunOption("-p", "--print-config", None, "Print the configuration before running."),
)


@dataclass
class RunOptions:
    """Options of one run, from the command line or ``ex.run(options=...)``."""

    id: Any = None
    comment: str | None = None
    unobserved: bool = False
    beat_interval: float | None = None
    capture: str | None = None
    name: str | None = None
    priority: float | None = None
    print_config: bool = False
    observers: list[ObserverLike] = field(default_factory=list)
    #: Sacred's ``meta.options``: every flag by its long name, credentials removed.
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
                except ObserverConfigError as exc:
                    raise UsageError(f"argument {spec.short}/{spec.long}: {exc}") from None
            resolved.recorded[spec.long] = [redact(str(item)) for item in values]
            continue
        if key not in by_name:
            raise UsageError(f"unknown option {key!r}")
        option = by_name[key]
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
        setattr(resolved, option.long.lstrip("-").replace("-", "_"), value)
        resolved.recorded[option.long] = value
    return resolved


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage and exits; we want one line
        raise UsageError(message)


def parse_command_line(
    argv: list[str], prog: str, description: str | None = None, config_help: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``argv`` into config updates and an options dict for :func:`resolve_options`."""
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [with KEY=VALUE ...] [options]",
        description=description,
        epilog=config_help,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("updates", nargs="*", metavar="with KEY=VALUE", help="Config updates.")
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
    if words and words[0] != "with":
        raise UsageError(f"unexpected argument {words[0]!r} (config updates follow 'with')")
    updates: dict[str, Any] = {}
    for word in words[1:]:
        if word == "with":
            continue
        key, sep, text = word.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"malformed config update {word!r} (expected KEY=VALUE)")
        updates[key.strip()] = parse_value(text)
    return updates, {key: value for key, value in namespace.items() if value not in (None, False)}


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


def apply_config_updates(defaults: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``updates`` applied; dotted keys reach into dict-valued parameters."""
    config = copy.deepcopy(defaults)
    for key, value in (updates or {}).items():
        top, *path = key.split(".")
        if top not in config:
            known = ", ".join(sorted(config)) or "none"
            raise UsageError(f"unknown config key {top!r} (known: {known})")
        if not path:
            config[top] = value
            continue
        target = config[top]
        if target is None:
            target = config[top] = {}
        for depth, part in enumerate(path):
            if not isinstance(target, dict):
                prefix = ".".join([top, *path[:depth]])
                raise UsageError(f"cannot set {key!r}: {prefix!r} is not a dict")
            if depth == len(path) - 1:
                target[part] = value
            else:
                target = target.setdefault(part, {})
    return config
