"""Sacred's ``sacred.arg_parser``: parsing ``with`` updates, for scripts that import it."""

from __future__ import annotations

from typing import Any

from prefect_sacred.config.paths import set_by_path
from prefect_sacred.flows.commandline import parse_value

__all__ = ["get_config_updates"]


def get_config_updates(updates: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """Split ``["lr=0.1", "model.depth=3", "big"]`` into config updates and named configs.

    Values are Python or JSON literals, else strings (an error with
    ``SETTINGS.COMMAND_LINE.STRICT_PARSING``); dotted names reach into nested entries.
    """
    config_updates: dict[str, Any] = {}
    named_configs: list[str] = []
    for update in updates or []:
        if update == "":
            continue
        path, sep, value = update.partition("=")
        if sep:
            set_by_path(config_updates, path.strip(), parse_value(value.strip()))
        else:
            named_configs.append(path)
    return config_updates, named_configs
