"""How observers are chosen without code: command-line flags and observer URLs.

Each observer module registers its own flag (``-F``, ``-m``, ...) and URL schemes at import, so
the command line and the deployment setting grow with the observers instead of a central table.
Optional dependencies are imported when an observer is built, not when it registers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from prefect_sacred.observers.base import RunObserver

__all__ = [
    "OBSERVERS_ENV_VAR",
    "ObserverConfigError",
    "ObserverOption",
    "observer_from_url",
    "observer_options",
    "observers_from_env",
    "redact",
    "register_observer_option",
    "register_url_scheme",
]

OBSERVERS_ENV_VAR = "PREFECT_SACRED_OBSERVERS"

ObserverFactory = Callable[[str], RunObserver]


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


def register_observer_option(
    short: str, long: str, metavar: str, help: str
) -> Callable[[ObserverFactory], ObserverFactory]:
    """Decorator: ``factory(value)`` builds the observer for ``short/long VALUE``."""

    def decorate(factory: ObserverFactory) -> ObserverFactory:
        _options[long] = ObserverOption(short, long, metavar, help, factory)
        return factory

    return decorate


def register_url_scheme(*schemes: str) -> Callable[[ObserverFactory], ObserverFactory]:
    """Decorator: ``factory(url)`` builds the observer for URLs with one of ``schemes``."""

    def decorate(factory: ObserverFactory) -> ObserverFactory:
        for scheme in schemes:
            _schemes[scheme.lower()] = factory
        return factory

    return decorate


def observer_options() -> list[ObserverOption]:
    """Every registered observer flag, sorted by long name as Sacred applies them."""
    import prefect_sacred.observers  # noqa: F401  (registers the built-in observers)

    return [_options[name] for name in sorted(_options)]


def observer_from_url(url: str) -> RunObserver:
    """Build an observer from a URL such as ``file://./my_runs`` or ``mongodb://host/db``."""
    import prefect_sacred.observers  # noqa: F401

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


def observers_from_env(environ: dict[str, str] | None = None) -> list[RunObserver]:
    """Observers named in ``PREFECT_SACRED_OBSERVERS``: URLs separated by whitespace."""
    value = (environ if environ is not None else os.environ).get(OBSERVERS_ENV_VAR, "")
    return [observer_from_url(url) for url in value.split()]


@register_url_scheme("block")
def _observer_from_block(url: str) -> RunObserver:
    """``block://<block-type-slug>/<block-name>``: a saved Block that builds an observer.

    Blocks of this package have an ``observer()`` method; credentials stay in the Block.
    """
    slug_and_name = url[len("block://") :]
    if slug_and_name.count("/") != 1 or not all(slug_and_name.split("/")):
        raise ObserverConfigError(f"expected block://<block-type-slug>/<block-name>, got {url!r}")
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
    observer: RunObserver = build()
    return observer


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#\s]+)@")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|key|credentials?)=)[^&\s]*")


def redact(text: str) -> str:
    """Hide credentials in URLs inside ``text``: ``mongodb://u:pw@h`` -> ``mongodb://u:***@h``."""

    def hide(match: re.Match[str]) -> str:
        user = match.group("userinfo").split(":", 1)[0]
        return f"{match.group('scheme')}{user}:***@"

    return _SECRET_QUERY.sub(r"\g<key>***", _CREDENTIALS.sub(hide, text))
