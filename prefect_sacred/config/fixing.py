"""Evaluating config code around fixed values, and what the evaluation changed.

A config scope's body runs with the values fixed by updates, named configs and earlier scopes
already in place: an assignment to a fixed entry keeps the fixed value (and is noted as
modified or type-changed), so entries derived from it follow the fixed value.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_sacred.config.paths import join_paths, prefixes

__all__ = ["ConfigSummary", "FixedDict", "normalize", "type_changed", "unfix"]


def _simple_type(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, tuple):
        return list
    if isinstance(value, dict):
        return dict
    kind = type(value)
    module = getattr(kind, "__module__", "")
    if module == "numpy":  # numpy scalars compare as the Python numbers they hold
        for python_type in (bool, int, float):
            try:
                if isinstance(value.item(), python_type):
                    return python_type
            except (AttributeError, ValueError):
                break
    return kind


def type_changed(old: Any, new: Any) -> bool:
    """Sacred's rule: a change of (simplified) type, not counting a change from ``None``."""
    return old is not None and _simple_type(old) is not _simple_type(new)


def _differs(old: Any, new: Any) -> bool:
    try:
        return bool(old != new)
    except Exception:  # arrays compare element-wise
        return old is not new


class FixedDict(dict):  # type: ignore[type-arg]
    """A dict whose ``fixed`` entries win over any assignment, recording what was overridden.

    ``fallback`` entries (the configs of ingredients, seen from their parent) can be read but
    are never part of the result; writes to them are ignored and noted.
    """

    def __init__(self, fixed: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fixed: dict[str, Any] = {
            key: FixedDict(value) if isinstance(value, dict) else value
            for key, value in (fixed or {}).items()
        }
        self.fallback: Mapping[str, Any] = {}
        self.modified: set[str] = set()
        self.typechanges: dict[str, tuple[type, type]] = {}
        self.fallback_writes: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.fixed:
            if key in self.fallback:
                self.fallback_writes.append(key)
                return
            dict.__setitem__(self, key, value)
            return
        fixed = self.fixed[key]
        dict.__setitem__(self, key, fixed)
        if isinstance(fixed, FixedDict) and isinstance(value, dict):
            for inner_key, inner_value in value.items():
                fixed[inner_key] = inner_value
            self.modified |= {join_paths(key, inner) for inner in fixed.modified}
            self.typechanges.update({join_paths(key, k): v for k, v in fixed.typechanges.items()})
        if type_changed(value, fixed):
            self.typechanges[key] = (type(value), type(fixed))
        if _differs(value, fixed):
            self.modified.add(key)

    def __getitem__(self, key: str) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in self.fallback:
            return self.fallback[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.fallback

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __delitem__(self, key: str) -> None:
        if key not in self.fixed:
            dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def reveal(self) -> set[str]:
        """Add the fixed entries the code never assigned; return their paths (the added ones)."""
        added: set[str] = set()
        for key, fixed in self.fixed.items():
            if not dict.__contains__(self, key):
                dict.__setitem__(self, key, fixed)
                added.add(key)
            value = dict.__getitem__(self, key)
            if isinstance(value, FixedDict):
                added |= {join_paths(key, inner) for inner in value.reveal()}
        return added


def unfix(value: Any) -> Any:
    """Plain dicts and lists again (tuples become lists, as in a stored config)."""
    if isinstance(value, dict):
        return {key: unfix(inner) for key, inner in dict.items(value)}
    if isinstance(value, (list, tuple)):
        return [unfix(inner) for inner in value]
    return value


def normalize(value: Any) -> Any:
    """A config value as Sacred stores it: tuples as lists, numpy scalars as Python numbers.

    Raises:
        KeyError: a key MongoDB could not store (a ``.`` in it, a leading ``$``).
    """
    if isinstance(value, dict):
        result = {}
        for key, inner in dict.items(value):
            if isinstance(key, str) and ("." in key or key.startswith("$")):
                raise KeyError(f'invalid config key "{key}": keys cannot contain "." or start with "$"')
            result[key] = normalize(inner)
        return result
    if isinstance(value, (list, tuple)):
        return [normalize(inner) for inner in value]
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        try:
            return value.item()
        except ValueError:
            pass
    return value


class ConfigSummary(dict):  # type: ignore[type-arg]
    """An evaluated config, with which entries were added, modified or changed type, and docs."""

    def __init__(
        self,
        added: Iterable[str] = (),
        modified: Iterable[str] = (),
        typechanged: Mapping[str, tuple[type, type]] | None = None,
        ignored_fallbacks: Iterable[str] = (),
        docs: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.added = set(added)
        self.modified = set(modified)
        self.typechanged = dict(typechanged or {})
        self.ignored_fallbacks = set(ignored_fallbacks)
        self.docs = dict(docs or {})
        self._settle()

    def narrow(self, other: ConfigSummary) -> None:
        """Fold in a later scope of the same ingredient: only what stays added is added."""
        self.added &= other.added
        self.modified |= other.modified
        self.typechanged.update(other.typechanged)
        self._settle()
        for key, doc in other.docs.items():
            if not self.docs.get(key):
                self.docs[key] = doc

    def merge(self, other: ConfigSummary, path: str = "") -> None:
        """Fold in the summary of the ingredient at ``path``."""
        self.added |= {join_paths(path, key) for key in other.added}
        self.modified |= {join_paths(path, key) for key in other.modified}
        self.typechanged.update({join_paths(path, key): value for key, value in other.typechanged.items()})
        self.docs.update(
            {join_paths(path, key): doc for key, doc in other.docs.items() if not path or key != "seed"}
        )
        self._settle()

    def _settle(self) -> None:
        # A changed entry changes its parents; an entry is in exactly one of the three sets.
        self.modified |= {prefix for key in self.added for prefix in prefixes(key)}
        self.modified |= {prefix for key in set(self.modified) for prefix in prefixes(key)}
        self.modified |= {prefix for key in self.typechanged for prefix in prefixes(key)}
        self.added -= set(self.typechanged)
        self.modified -= set(self.typechanged)
        self.modified -= self.added
