"""The options of one run: Sacred's run flags (``-i``, ``-c``, ``-b`` ...) and observer flags.

They come from a command line (:mod:`prefect_sacred.flows.commandline`), from
``ex.run(options={...})`` or from a queued run's labels; :func:`resolve_options` checks and
converts them all the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.core.capture import CAPTURE_MODES
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.registry import ObserverConfigError, observer_options
from prefect_sacred.utils import UsageError, redact

__all__ = ["RUN_OPTIONS", "RunOptions", "UsageError", "resolve_options", "sacred_options"]


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
    _RunOption("-q", "--queue", None, "Only queue the run: a flow run of the deployment, recorded QUEUED."),
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
    if text.isdigit() or text.upper() in logging.getLevelNamesMapping():
        return text.upper()
    raise UsageError(
        f"argument -l/--loglevel: invalid level {text!r} (DEBUG, INFO, WARNING, ERROR or a number)"
    )
