"""``-m/--mongo_db`` and the ``mongodb://`` observer URLs.

Sacred's grammar, ``[HOST:PORT:]DB_NAME[.COLLECTION[:RUN_ID]][!PRIORITY]`` or ``HOST:PORT``,
plus what Sacred crashes on: full ``mongodb://`` and ``mongodb+srv://`` URIs. In a URI the path
names the database (``mongodb://host/my_db``, default ``sacred``) and may name the runs
collection (``/my_db.my_runs``); ``!PRIORITY`` may follow the URI. Malformed values raise
:class:`ObserverConfigError`, which the command line reports in one line (exit status 2).
pymongo is imported only when an observer is built; the wing's ``__init__`` imports this module,
so the flag and the schemes are registered whenever the wing is.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.registry import (
    ObserverConfigError,
    register_observer_option,
    register_url_scheme,
)
from prefect_sacred.utils import redact

__all__ = ["parse_mongo_db_arg"]

_NAME = r"[_A-Za-z][0-9A-Za-z#%&'()+\-;=@\[\]^_{}]{0,63}"
_HOST = r"[0-9A-Za-z](?:[0-9A-Za-z-]{0,61}[0-9A-Za-z])?(?:\.[0-9A-Za-z](?:[0-9A-Za-z-]{0,61}[0-9A-Za-z])?)*"
_HOST_ONLY = re.compile(rf"^(?P<host>{_HOST}):(?P<port>\d{{1,5}})$")
_FULL = re.compile(
    rf"^(?:(?P<host>{_HOST}):(?P<port>\d{{1,5}}):)?(?P<db_name>{_NAME})"
    rf"(?:\.(?P<collection>{_NAME})(?::(?P<overwrite>\d{{1,12}}))?)?(?:!(?P<priority>-?\d+))?$"
)
_URI = re.compile(r"^(?P<uri>mongodb(?:\+srv)?://[^\s]+?)(?:!(?P<priority>-?\d+))?$", re.IGNORECASE)
_FORMS = (
    "DB_NAME, HOST:PORT, HOST:PORT:DB_NAME, DB_NAME.COLLECTION[:RUN_ID], any of these with "
    "!PRIORITY, or a mongodb:// or mongodb+srv:// URI"
)


def parse_mongo_db_arg(value: str) -> dict[str, Any]:
    """The MongoObserver arguments a ``-m`` value stands for.

    Args:
        value: e.g. ``"my_db"``, ``"host:27017:my_db.runs:12!5"`` or ``"mongodb://u:p@h/db"``.

    Returns:
        Keyword arguments for :class:`~prefect_sacred.observers.mongo.MongoObserver`: Sacred's
        (``url``, ``db_name``, ``collection``, ``overwrite`` as text, ``priority`` as int).

    Raises:
        ObserverConfigError: ``value`` has none of the accepted forms.
    """
    value = value.strip()
    uri = _URI.match(value)
    if uri:
        return _parse_uri(uri.group("uri"), uri.group("priority"))
    if "://" in value:
        raise ObserverConfigError(f"unsupported URL {redact(value)!r}; expected {_FORMS}")
    match = _HOST_ONLY.match(value)
    if match:
        _check_port(match.group("port"), value)
        return {"url": f"{match.group('host')}:{match.group('port')}"}
    match = _FULL.match(value)
    if not match:
        raise ObserverConfigError(f"malformed MongoDB spec {redact(value)!r}; expected {_FORMS}")
    groups = match.groupdict()
    kwargs: dict[str, Any] = {}
    if groups["host"]:
        _check_port(groups["port"], value)
        kwargs["url"] = f"{groups['host']}:{groups['port']}"
    if groups["priority"] is not None:
        kwargs["priority"] = int(groups["priority"])
    for key in ("db_name", "collection", "overwrite"):
        if groups[key] is not None:
            kwargs[key] = groups[key]
    return kwargs


def _check_port(port: str, value: str) -> None:
    if not 0 < int(port) < 65536:
        raise ObserverConfigError(f"port {port} out of range in {redact(value)!r}")


def _parse_uri(uri: str, priority: str | None) -> dict[str, Any]:
    rest = uri.split("://", 1)[1]
    hosts, _, path = rest.partition("/")
    if not hosts or hosts.endswith("@") or hosts.startswith(("@", ":", ",")):
        raise ObserverConfigError(f"MongoDB URI without a host: {redact(uri)!r}")
    path = path.split("?", 1)[0]
    kwargs: dict[str, Any] = {"url": uri}
    if path:
        db_name, _, collection = unquote(path).partition(".")
        if not re.fullmatch(_NAME, db_name) or (collection and not re.fullmatch(_NAME, collection)):
            raise ObserverConfigError(f"invalid database or collection name in {redact(uri)!r}")
        kwargs["db_name"] = db_name
        if collection:
            kwargs["collection"] = collection
    if priority is not None:
        kwargs["priority"] = int(priority)
    return kwargs


def _build(kwargs: dict[str, Any]) -> RunObserver:
    from prefect_sacred.observers.mongo.observer import MongoObserver

    return MongoObserver(**kwargs)


@register_observer_option(
    "-m",
    "--mongo_db",
    "DB",
    "Add a MongoDB observer: [HOST:PORT:]DB_NAME[.COLLECTION[:RUN_ID]][!PRIORITY] or a "
    "mongodb:// / mongodb+srv:// URI.",
)
def _mongo_db_option(value: str) -> RunObserver:
    return _build(parse_mongo_db_arg(value))


@register_url_scheme("mongodb", "mongodb+srv")
def _mongo_url(url: str) -> RunObserver:
    """``mongodb://[user:password@]host[:port]/[db[.collection]][?options][!PRIORITY]``."""
    kwargs = parse_mongo_db_arg(url)
    return _build(kwargs)
