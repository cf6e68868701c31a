"""Connecting the MongoObserver: the client, failing fast, indexes, and the run ids it claims.

Sacred's observer connects lazily with pymongo's defaults, so an unreachable server surfaces
as a 30 s hang at the first write, and its ``max(_id) + 1`` ids collide under concurrent
starts. Here the client gets a short server-selection timeout, ``ping`` fails the start with
the server named (never the password), and ids are claimed by inserting and retrying on a
duplicate key. pymongo is imported only when an observer is built.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from prefect_sacred.observers.registry import ObserverConfigError
from prefect_sacred.utils import redact

__all__ = [
    "DEFAULT_TIMEOUTS_MS",
    "OWN_FIELDS",
    "RESERVED_COLLECTIONS",
    "UNFINISHED",
    "check_client",
    "check_reachable",
    "collection_names",
    "create_indexes",
    "find_run_id",
    "insert_with_id",
    "insert_with_next_id",
    "load_pymongo",
    "make_client",
    "server_address",
]

logger = logging.getLogger("prefect_sacred.mongo")

INSTALL_HINT = "pip install 'prefect-sacred[mongo]'"
RESERVED_COLLECTIONS = {
    "fs.files",
    "fs.chunks",
    "_properties",
    "system.indexes",
    "search_space",
    "search_spaces",
}
# The fields a reattached observer takes over from the stored document (the rest is other tools').
OWN_FIELDS = (
    "_id",
    "experiment",
    "format",
    "command",
    "host",
    "start_time",
    "config",
    "meta",
    "status",
    "resources",
    "artifacts",
    "captured_out",
    "captured_out_file",
    "info",
    "heartbeat",
    "result",
    "stop_time",
    "fail_trace",
)
#: The statuses of a run that can still be finished (``reattach``).
UNFINISHED = frozenset({"RUNNING", "QUEUED"})


def load_pymongo() -> Any:
    try:
        import gridfs  # noqa: F401  (part of pymongo; checked here so the hint covers both)
        import pymongo
    except ImportError:
        raise ObserverConfigError(f"the MongoDB observer needs pymongo: {INSTALL_HINT}") from None
    return pymongo


#: pymongo's timeouts unless the URL or the observer's keywords set them (milliseconds).
#: pymongo's own defaults are 30 s to find a server, 20 s to connect and no read timeout at all:
#: a server that accepts TCP and never answers would hang a write forever.
DEFAULT_TIMEOUTS_MS = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 30000,
}


def make_client(url: str | None, client_kwargs: dict[str, Any]) -> Any:
    """A ``MongoClient`` for ``url`` with timeouts on every call (:data:`DEFAULT_TIMEOUTS_MS`).

    An unreachable or silent server fails the first operation within 5 s, a write that gets no
    reply fails within 30 s. GridFS goes through the same client, so the same timeouts.
    """
    pymongo = load_pymongo()
    csot = _has_option(url, "timeoutMS") or any(key.lower() == "timeoutms" for key in client_kwargs)
    for option, default in DEFAULT_TIMEOUTS_MS.items():
        if option == "socketTimeoutMS" and csot:  # pymongo's timeoutMS bounds reads already
            continue
        if not _has_option(url, option) and not any(key.lower() == option.lower() for key in client_kwargs):
            client_kwargs[option] = default
    # connect=False: no background connection (and no SRV lookup) until the first write.
    client_kwargs.setdefault("connect", False)
    try:
        return pymongo.MongoClient(url, **client_kwargs)
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
        raise ObserverConfigError(
            f"invalid MongoDB connection {redact(str(url))!r}: {redact(str(exc))}"
        ) from None


def check_client(client: Any) -> None:
    """Refuse, as Sacred does, a ``client`` that is not a ``pymongo.MongoClient``.

    mongomock's ``MongoClient``, the test double, is taken too (when mongomock is imported).

    Raises:
        ValueError: ``client`` is something else (a URL string, a database, ...).
    """
    clients: tuple[type, ...] = (load_pymongo().MongoClient,)
    mongomock = sys.modules.get("mongomock")
    if mongomock is not None:
        clients += (mongomock.MongoClient,)
    if not isinstance(client, clients):
        raise ValueError(f"client needs to be a pymongo.MongoClient, but is {type(client)} instead")


def collection_names(collection: str, collection_prefix: str) -> tuple[str, str]:
    """The runs and metrics collections, named as Sacred names them."""
    if collection != "runs":
        if collection_prefix:
            raise ValueError("Cannot pass both collection and a collection prefix.")
        runs_name, metrics_name = collection, "metrics"
    else:
        prefix = f"{collection_prefix}_" if collection_prefix else ""
        runs_name, metrics_name = f"{prefix}runs", f"{prefix}metrics"
    for name in (runs_name, metrics_name):
        if name in RESERVED_COLLECTIONS:
            raise KeyError(f'Collection name "{name}" is reserved. Please use a different one.')
    return runs_name, metrics_name


def check_reachable(database: Any, address: str) -> None:
    """Fail fast, with the server named and no password, when MongoDB cannot be reached."""
    pymongo = load_pymongo()
    try:
        database.command("ping")
    except pymongo.errors.PyMongoError as exc:
        # pymongo appends the whole topology description: the first part says what failed.
        reason = str(exc).split(", Topology Description:", 1)[0]
        raise ConnectionError(f"cannot reach MongoDB at {redact(address)}: {redact(reason)[:500]}") from None
    except AttributeError:  # a mongomock database has no command(): nothing to reach
        pass


def create_indexes(database: Any, metrics: Any) -> None:
    """Sacred creates no indexes; these make the lookups the observer does cheap."""
    try:
        if metrics is not None:
            metrics.create_index([("run_id", 1), ("name", 1)])
        database["fs.files"].create_index([("md5", 1)])
    except Exception as exc:  # read-only users, or servers that refuse: not fatal
        logger.debug("could not create indexes: %s", exc)


def server_address(url: str | None, client: Any) -> str:
    """The server(s) of ``url`` or ``client`` as ``scheme://hosts``, for messages (redact it still)."""
    if url and "://" in url:
        scheme, rest = url.split("://", 1)
        hosts = rest.split("/", 1)[0].split("?", 1)[0]
        return f"{scheme}://{hosts}"
    if url:
        return f"mongodb://{url}"
    try:
        seeds = client.topology_description.server_descriptions()
        return "mongodb://" + ",".join(f"{host}:{port}" for host, port in seeds)
    except Exception:
        return "mongodb://localhost:27017"


def insert_with_next_id(runs: Any, entry: dict[str, Any]) -> int:
    """Insert ``entry`` under ``max(numeric _id) + 1``; on a duplicate key, take the next one.

    String ids (``--id abc``) are skipped, so they never break the counting.
    """
    from pymongo.errors import DuplicateKeyError

    for _ in range(10_000):
        last = list(runs.find({"_id": {"$type": "number"}}, {"_id": 1}).sort("_id", -1).limit(1))
        candidate = int(last[0]["_id"]) + 1 if last else 1
        entry["_id"] = candidate
        try:
            runs.insert_one(entry)
        except DuplicateKeyError:  # another run took this id first: take the next one
            continue
        return candidate
    raise RuntimeError(f"could not claim a run id in {runs.name}")


def insert_with_id(runs: Any, entry: dict[str, Any], _id: Any) -> bool:
    """Insert ``entry`` as run ``_id``; False when it starts the QUEUED run of that id instead.

    Then ``entry`` keeps the queued run's ``meta.queue_time`` and the caller ``$set``s it.

    Raises:
        FileExistsError: Another run has this id.
    """
    from pymongo.errors import DuplicateKeyError

    entry["_id"] = _id
    try:
        runs.insert_one(entry)
        return True
    except DuplicateKeyError:
        existing = runs.find_one({"_id": _id}, {"status": 1, "meta": 1}) or {}
    if existing.get("status") != "QUEUED" or entry["status"] == "QUEUED":
        raise FileExistsError(f"a run with _id {_id!r} already exists in {runs.name}")
    queue_time = (existing.get("meta") or {}).get("queue_time")
    if queue_time is not None:
        entry["meta"] = {**entry["meta"], "queue_time": queue_time}
    return False


def find_run_id(runs: Any, _id: Any) -> Any:
    """The stored ``_id`` matching ``_id``; ids recorded as text (labels) match numbers too."""
    candidates = [_id]
    if isinstance(_id, str) and re.fullmatch(r"-?\d{1,18}", _id.strip()):
        candidates.append(int(_id))
    for candidate in candidates:
        doc = runs.find_one({"_id": candidate}, {"_id": 1})
        if doc is not None:
            return doc["_id"]
    return None


def _has_option(url: str | None, option: str) -> bool:
    return bool(url) and re.search(rf"[?&]{option}=", str(url), re.IGNORECASE) is not None
