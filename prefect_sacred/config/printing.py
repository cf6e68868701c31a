"""The built-in commands' output: ``print_config``, ``print_dependencies``, ``print_named_configs``.

The text is Sacred 0.8.7's, colours included (ANSI codes, as colorama writes them), so scripts
and readers that parse it keep working.
"""

from __future__ import annotations

import pprint
from collections.abc import Iterator, Mapping
from typing import Any

from prefect_sacred.config.fixing import ConfigSummary
from prefect_sacred.config.paths import join_paths

__all__ = ["format_config", "format_dependencies", "format_named_configs"]

RED, GREEN, BLUE, DIM, RESET = "\x1b[31m", "\x1b[32m", "\x1b[34m", "\x1b[2m", "\x1b[0m"
LEGEND = f"({BLUE}modified{RESET}, {GREEN}added{RESET}, {RED}typechanged{RESET}, {DIM}doc{RESET})"
_PRINTER = pprint.PrettyPrinter()
_PATH = object()  # marks a dict entry, printed as ``key:`` with its entries below


def _ordered(tree: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    # ``__doc__`` first, then plain values, then sub-dicts, each sorted by key.
    def order(item: tuple[str, Any]) -> tuple[int, str]:
        key, value = item
        if key == "__doc__":
            return 0, ""
        return (2 if isinstance(value, dict) and value else 1), key

    for key, value in sorted(tree.items(), key=order):
        if isinstance(value, dict) and value:
            yield key, _PATH
            for path, inner in _ordered(value):
                yield join_paths(key, path), inner
        else:
            yield key, value


def format_config(config: Mapping[str, Any], mods: ConfigSummary) -> str:
    """The text ``print_config`` prints: every entry, coloured by how it changed, with its doc."""
    lines = [f"Configuration {LEGEND}:"]
    for path, value in _ordered(config):
        indent = " " * (2 + 2 * path.count("."))
        key = path.rpartition(".")[2]
        if path in mods.typechanged:
            color = RED
        elif path in mods.added:
            color = GREEN
        elif path in mods.modified:
            color = BLUE
        else:
            color = ""
        if key == "__doc__":
            color = DIM
            assign = '{}"""{}"""'.format(indent, str(value).replace("\n", "\n" + indent))
        elif value is _PATH:
            assign = f"{indent}{key}:"
        else:
            assign = f"{indent}{key} = {_PRINTER.pformat(value)}"
        doc = mods.docs.get(path)
        if doc:
            comment = f"{DIM}# {doc}{RESET}"
            assign = f"{assign:<35}  {comment}" if len(assign) <= 35 else f"{assign}    {comment}"
        lines.append(color + assign + (RESET if color else ""))
    return "\n".join(lines)


def format_dependencies(experiment_info: Mapping[str, Any]) -> str:
    """The text ``print_dependencies`` prints: packages, sources with digests, repositories."""
    lines = ["Dependencies:"]
    for dependency in experiment_info["dependencies"]:
        package, _, version = dependency.partition("==")
        lines.append(f"  {package:<20} == {version}")
    lines += ["", "Sources:"]
    for source, digest in experiment_info["sources"]:
        lines.append(f"  {source:<43}  {digest}")
    if experiment_info.get("repositories"):
        lines += ["", "Version Control:"]
        for repository in experiment_info["repositories"]:
            mark = RED + "M" if repository["dirty"] else " "
            lines.append(f"{mark} {repository['url']:<43}  {repository['commit']}{RESET}")
    lines.append("")
    return "\n".join(lines)


def format_named_configs(named_configs: Mapping[str, Any]) -> str:
    """The text ``print_named_configs`` prints: each named config with its docstring."""
    lines = [f"Named Configurations ({DIM}doc{RESET}):"]
    for path, named in named_configs.items():
        assign = path
        doc = getattr(named, "__doc__", None)
        if doc is not None:
            if doc.strip().count("\n") == 0:
                assign += f"{DIM}   # {doc.strip()}{RESET}"
            else:
                assign += DIM + '\n{}"""{}"""'.format("    ", doc.replace("\n", "\n  ")) + RESET
        lines.append("  " + assign)
    if len(lines) < 2:
        lines.append("  No named configs")
    return "\n".join(lines)


# --- Sacred's built-in commands (captured functions: their names, arguments and docs are Sacred's)


def print_config(_run: Any) -> None:
    """
    Print the updated configuration and exit.

    Text is highlighted:
      green:  value modified
      blue:   value added
      red:    value modified but type changed
    """
    print(format_config(_run.config, _run.config_modifications))


def print_dependencies(_run: Any) -> None:
    """Print the detected source-files and dependencies."""
    print(format_dependencies(_run.experiment_info))


def save_config(_config: Mapping[str, Any], _log: Any, config_filename: str = "config.json") -> None:
    """
    Store the updated configuration in a file.

    By default uses the filename "config.json", but that can be changed by
    setting the config_filename config entry.
    """
    import copy

    from prefect_sacred.config.scope import save_config_file

    config = copy.deepcopy(dict(_config))
    config.pop("config_filename", None)
    if _log is not None:
        _log.info('Saving config to "%s"', config_filename)
    save_config_file(config, config_filename)


def named_configs_printer(ingredient: Any) -> Any:
    """The ``print_named_configs`` command of ``ingredient`` (and the ingredients below it)."""

    def print_named_configs() -> None:
        """Print the available named configs and exit."""
        print(format_named_configs(dict(ingredient.gather_named_configs())))

    return print_named_configs
