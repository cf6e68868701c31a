"""PEP 562 lazy attributes, so importing a package costs only what is used from it.

``prefect.collections`` imports ``prefect_sacred.blocks`` in every Prefect process, and an
observer module is imported in every served flow run: neither should pay for Prefect's flow
engine, database drivers, numpy or pandas that they do not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class NotInPrefectSacred(ImportError):
    """A name Sacred has and this package does not; the message says what to use instead."""


def lazy_attributes(
    package: str, exports: dict[str, str], instead: dict[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` importing ``exports[name]`` (a module path) on first access,
    and its ``__dir__``, listing those names too (``dir()``, IPython and Jupyter completion).

    ``instead`` maps names the package does not have (Sacred's) to what to use instead: asking
    for one raises :class:`NotInPrefectSacred` saying so (an ImportError: ``from pkg import name``
    turns an AttributeError into its own message, losing the advice).

    Use: ``__getattr__, __dir__ = lazy_attributes(__name__, {...})``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            if instead and name in instead:
                raise NotInPrefectSacred(f"{package} has no {name!r} (Sacred's): {instead[name]}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*importlib.import_module(package).__dict__, *exports})

    return __getattr__, __dir__
