"""Sacred's ``SETTINGS``: process-wide defaults, with Sacred's names and tree.

``from prefect_sacred import SETTINGS`` then ``SETTINGS.CAPTURE_MODE = "sys"`` or
``SETTINGS["CAPTURE_MODE"] = "sys"``, as with ``from sacred import SETTINGS``. Each setting acts
as in Sacred 0.8.7 (read when a run starts, so it may be set before or after the experiment is
made); an unknown key, a nested group set to a plain value, a value of the wrong kind, or a
value this package does not support raises :class:`SettingError` in one line saying what to use.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["SETTINGS", "SettingError", "Settings"]


class SettingError(ValueError):
    """An unknown setting, or a value it cannot take here."""


def _choice(*allowed: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in allowed:
            raise SettingError(
                f"SETTINGS.{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
            )

    return check


def _kind(*kinds: type) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(kind.__name__ for kind in kinds)
            raise SettingError(f"SETTINGS.{name} must be a {wanted}, not {value!r}")

    return check


def _only(supported: Any, instead: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value != supported:
            raise SettingError(f"SETTINGS.{name}={value!r} is not supported by prefect-sacred: {instead}")

    return check


def _strings(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise SettingError(f"SETTINGS.{name} must be a list of strings, not {value!r}")


def _numpy_legacy_default() -> bool:
    """Sacred's default: numpy's legacy ``RandomState`` for ``_rnd`` before numpy 1.19."""
    try:
        major, minor = (int(part) for part in importlib.metadata.version("numpy").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (1, 19)


_MONGO_KEYS = "the MongoObserver makes keys MongoDB can store itself (see the README)"
_KEY_CHECKS = "config keys are checked by the config system and the observers, not by a setting"

#: Sacred 0.8.7's settings: ``(default, check)`` per leaf, dicts for the groups.
_TREE: dict[str, Any] = {
    "CONFIG": {
        "ENFORCE_KEYS_MONGO_COMPATIBLE": (True, _only(True, _MONGO_KEYS)),
        "ENFORCE_KEYS_JSONPICKLE_COMPATIBLE": (True, _only(True, _KEY_CHECKS)),
        "ENFORCE_VALID_PYTHON_IDENTIFIER_KEYS": (False, _only(False, _KEY_CHECKS)),
        "ENFORCE_STRING_KEYS": (False, _only(False, _KEY_CHECKS)),
        "ENFORCE_KEYS_NO_EQUALS": (True, _only(True, _KEY_CHECKS)),
        # Dicts and lists of the config are read-only inside captured functions.
        "READ_ONLY_CONFIG": (True, _kind(bool)),
        # Comments matching these (regular expressions) are never an entry's doc.
        "IGNORED_COMMENTS": (["^pylint:", "^noinspection"], _strings),
        # ``_rnd`` is a numpy RandomState rather than a Generator.
        "NUMPY_RANDOM_LEGACY_API": (_numpy_legacy_default(), _kind(bool)),
    },
    "HOST_INFO": {
        "INCLUDE_GPU_INFO": (True, _kind(bool)),
        "INCLUDE_CPU_INFO": (True, _kind(bool)),
        # Environment variables recorded in every run's host info (besides captured_env=).
        "CAPTURED_ENV": ([], _strings),
    },
    "COMMAND_LINE": {
        # A command-line value that is no Python or JSON literal is an error, not a string.
        "STRICT_PARSING": (False, _kind(bool)),
        "SHOW_DISABLED_OPTIONS": (True, _kind(bool)),
    },
    "CAPTURE_MODE": ("fd" if os.name == "posix" else "sys", _choice("fd", "sys", "no")),
    "DISCOVER_DEPENDENCIES": ("imported", _choice("none", "imported", "sys", "pkg")),
    "DISCOVER_SOURCES": ("imported", _choice("none", "imported", "sys", "dir")),
    "DEFAULT_BEAT_INTERVAL": (10.0, _kind(int, float)),
}


class Settings(Mapping[str, Any]):
    """One group of settings: attribute and item access, Sacred's keys only, values checked."""

    def __init__(self, tree: dict[str, Any], path: str = "") -> None:
        values: dict[str, Any] = {}
        checks: dict[str, Callable[[str, Any], None]] = {}
        for key, spec in tree.items():
            if isinstance(spec, dict):
                values[key] = Settings(spec, f"{path}{key}.")
            else:
                default, check = spec
                values[key] = list(default) if isinstance(default, list) else default
                checks[key] = check
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_checks", checks)
        object.__setattr__(self, "_path", path)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise self._unknown(key) from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._values:
            raise self._unknown(key)
        if key not in self._checks:
            raise SettingError(f"SETTINGS.{self._path}{key} is a group of settings: set its entries")
        self._checks[key](f"{self._path}{key}", value)
        self._values[key] = list(value) if isinstance(value, tuple) else value

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __dir__(self) -> list[str]:
        return sorted(self._values)

    def __repr__(self) -> str:
        return f"Settings({dict(self._values)!r})"

    def _unknown(self, key: str) -> SettingError:
        return SettingError(f"unknown setting SETTINGS.{self._path}{key} (known: {', '.join(self._values)})")


#: The process-wide settings (Sacred's ``sacred.SETTINGS``).
SETTINGS = Settings(_TREE)
