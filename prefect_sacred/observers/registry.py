"""How observers are chosen without code: command-line flags and observer URLs.

Each observer wing (``file_storage``, ``mongo``, ``sql``, ``tinydb``) registers its own flag
(``-F``, ``-m``, ...) and URL schemes when it is imported, so the command line and the
deployment setting grow with the observers instead of a central table. Factories import a
backend's driver when they build an observer, never when they register.

Observers of other packages join the same way: a module that calls
:func:`register_observer_option` and :func:`register_url_scheme`, named in the
``prefect_sacred.observers`` entry-point group of that package::

    [project.entry-points."prefect_sacred.observers"]
    my_observer = "my_package.observer_plugin"

The wings and the entry points are loaded the first time a flag or URL is looked up.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.utils import redact

__all__ = [
    "ENTRY_POINT_GROUP",
    "OBSERVERS_ENV_VAR",
    "ObserverConfigError",
    "ObserverOption",
    "load_observer_plugins",
    "observer_from_url",
    "observer_options",
    "observers_from_env",
    "register_observer_option",
    "register_url_scheme",
]

OBSERVERS_ENV_VAR = "PREFECT_SACRED_OBSERVERS"
ENTRY_POINT_GROUP = "prefect_sacred.observers"
_BUILTIN_WINGS = (
    "prefect_sacred.observers.file_storage",
    "prefect_sacred.observers.mongo",
    "prefect_sacred.observers.notify",
    "prefect_sacred.observers.object_store",
    "prefect_sacred.observers.sql",
    "prefect_sacred.observers.tinydb",
)

logger = logging.getLogger("prefect_sacred")

ObserverFactory = Callable[[str], ObserverLike]


class ObserverConfigError(ValueError):
    """An observer flag or URL is malformed, or its backend's package is missing."""


@dataclass(frozen=True)
class ObserverOption:
    """A command-line flag that adds an observer, e.g. ``-F/--file_storage BASEDIR``."""

    short: str
    long: str
    metavar: str
    help: str
    factory: ObserverFactory


_options: dict[str, ObserverOption] = {}
_schemes: dict[str, ObserverFactory] = {}
_plugins_loaded = threading.Event()
_plugins_lock = threading.RLock()  # a plugin may look up flags while it loads


def load_observer_plugins() -> None:
    """Import the built-in wings and every ``prefect_sacred.observers`` entry point, once.

    A third-party plugin that fails to import is logged and left out; the others still load.
    """
    if _plugins_loaded.is_set():
        return
    with _plugins_lock:
        if _plugins_loaded.is_set():
            return
        for module in _BUILTIN_WINGS:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry_point.load()
            except Exception as exc:
                reason = redact(f"{type(exc).__name__}: {exc}")
                logger.warning("observer plugin %r could not be loaded: %s", entry_point.name, reason)
        _plugins_loaded.set()


def register_observer_option(
    short: str, long: str, metavar: str, help: str
) -> Callable[[ObserverFactory], ObserverFactory]:
    """Decorator: ``factory(value)`` builds the observer for ``short/long VALUE``.

    Raises:
        ObserverConfigError: another observer has the flag already (a plugin naming it is then
            left out, with a warning, and every other flag keeps working).
    """

    def decorate(factory: ObserverFactory) -> ObserverFactory:
        for option in _options.values():
            if option.factory is not factory and (option.long == long or option.short == short):
                raise ObserverConfigError(f"{short}/{long} is taken by {option.short}/{option.long}")
        _options[long] = ObserverOption(short, long, metavar, help, factory)
        return factory

    return decorate


def register_url_scheme(*schemes: str) -> Callable[[ObserverFactory], ObserverFactory]:
    """Decorator: ``factory(url)`` builds the observer for URLs with one of ``schemes``.

    Raises:
        ObserverConfigError: another observer has one of the schemes already.
    """

    def decorate(factory: ObserverFactory) -> ObserverFactory:
        taken = [scheme for scheme in schemes if _schemes.get(scheme.lower(), factory) is not factory]
        if taken:
            raise ObserverConfigError(f"URL scheme(s) {', '.join(taken)} taken by another observer")
        for scheme in schemes:
            _schemes[scheme.lower()] = factory
        return factory

    return decorate


def observer_options() -> list[ObserverOption]:
    """Every registered observer flag, sorted by long name as Sacred applies them."""
    load_observer_plugins()
    return [_options[name] for name in sorted(_options)]


def observer_from_url(url: str) -> ObserverLike:
    """Build an observer from a URL such as ``file://./my_runs`` or ``mongodb://host/db``."""
    load_observer_plugins()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if not match:
        # Not echoed: a malformed value is where an unredactable password would hide.
        raise ObserverConfigError("not an observer URL (expected scheme://...)")
    scheme = match.group(1).lower()
    factory = _schemes.get(scheme) or _schemes.get(scheme.split("+")[0])
    if factory is None:
        known = ", ".join(sorted(_schemes))
        raise ObserverConfigError(f"no observer for URL scheme {scheme!r} (known: {known})")
    return factory(url)


def observers_from_env(environ: dict[str, str] | None = None) -> list[ObserverLike]:
    """Observers named in ``PREFECT_SACRED_OBSERVERS``: URLs separated by whitespace."""
    value = (environ if environ is not None else os.environ).get(OBSERVERS_ENV_VAR, "")
    return [observer_from_url(url) for url in value.split()]


@register_url_scheme("block")
def _observer_from_block(url: str) -> ObserverLike:
    """``block://<block-type-slug>/<block-name>``: a saved Block that builds an observer.

    Blocks of this package have an ``observer()`` method; credentials stay in the Block.
    """
    slug_and_name = url[len("block://") :]
    if slug_and_name.count("/") != 1 or not all(slug_and_name.split("/")):
        raise ObserverConfigError(f"expected block://<block-type-slug>/<block-name>, got {redact(url)!r}")
    from prefect.blocks.core import Block

    try:
        block = Block.load(slug_and_name)
    except Exception as exc:
        raise ObserverConfigError(f"cannot load block {slug_and_name!r}: {redact(str(exc))}") from None
    build = getattr(block, "observer", None)
    if not callable(build):
        raise ObserverConfigError(
            f"block {slug_and_name!r} ({type(block).__name__}) cannot build an observer"
        )
    observer: ObserverLike = build()
    return observer
