"""Dotted paths into nested config dicts (``"optimizer.lr"``), as Sacred addresses entries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "flatten_items",
    "get_by_path",
    "is_prefix",
    "join_paths",
    "nest",
    "prefixes",
    "set_by_path",
]


def join_paths(*parts: str) -> str:
    """``join_paths("a", "", "b.c") == "a.b.c"``: empty parts are left out."""
    return ".".join(part.strip(".") for part in parts if part)


def prefixes(path: str) -> Iterator[str]:
    """``a``, ``a.b``, ``a.b.c`` for ``a.b.c``."""
    parts = path.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def is_prefix(prefix: str, path: str) -> bool:
    """Whether ``prefix`` is a strict path prefix of ``path`` (the empty path prefixes all)."""
    return not prefix or path.startswith(prefix + ".")


def flatten_items(tree: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every leaf of ``tree`` as ``(dotted path, value)``, keys sorted; empty dicts are leaves."""
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, Mapping) and value:
            for path, leaf in flatten_items(value):
                yield join_paths(key, path), leaf
        else:
            yield key, value


def set_by_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``a.b.c``, creating dicts on the way."""
    *parents, last = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def get_by_path(tree: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """``tree[a][b]`` for ``a.b`` (``tree`` itself for ``""``), or ``default`` when absent."""
    if not path:
        return tree
    current: Any = tree
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return default
        current = current[part]
    return current


def nest(updates: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d": 2}}`` as the nested ``{"a": {"b": 1}, "c": {"d": 2}}``."""
    nested: dict[str, Any] = {}
    for path, value in flatten_items(updates):
        set_by_path(nested, path, value)
    return nested
