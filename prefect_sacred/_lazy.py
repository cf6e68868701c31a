"""PEP 562 lazy attributes, so importing a package costs only what is used from it.

``prefect.collections`` imports ``prefect_sacred.blocks`` in every Prefect process, and an
observer module is imported in every served flow run: neither should pay for Prefect's flow
engine, database drivers, numpy or pandas that they do not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``exports[name]`` (a module path) on first access."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
