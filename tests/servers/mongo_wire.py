"""A MongoDB wire-protocol server for tests: pymongo -> TCP -> mockupdb -> mongomock.

No real ``mongod`` can be installed here (see reference/test-backends.md 1a), so the contract and
end-to-end tests talk to this server instead: real pymongo, real sockets, real BSON, real
server-side errors (11000 duplicate key, 17419 document too large, 26 namespace not found).
Query semantics are mongomock's; there is no auth, TLS, transactions or change streams.

The data lives in one ``mongomock.MongoClient`` owned by the server object, so :meth:`stop` and
:meth:`start` again on the same port simulate an outage of a server that keeps its data.

In process::

    server = MongoWireServer()       # port 0: pick a free one
    server.start(); client = pymongo.MongoClient(server.uri)
    server.stop(); server.start()    # an outage; same port, same data

As a process (for the command line): ``python -m tests.servers.mongo_wire 127.0.0.1 27018``
prints ``READY <port>``.

Every pymongo the ``mongo`` extra admits works against it: since pymongo 4.11 an update or
replace of one document may carry a ``sort`` (which document to change when several match);
the server honours it, and importing this module teaches in-process mongomock to take it too
(:mod:`tests.servers.mongomock_compat`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import threading
from typing import Any

import bson
import mongomock
import mongomock.gridfs
from mockupdb import MockupDB

from tests.servers.mongomock_compat import first_in_order, patch_mongomock

MAX_BSON_SIZE = 16 * 1024 * 1024
_BATCH_BYTES = 8 * 1024 * 1024
_IGNORED = {
    "$db",
    "lsid",
    "$readPreference",
    "writeConcern",
    "$clusterTime",
    "txnNumber",
    "readConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "comment",
    "maxTimeMS",
}
_MORE_TO_COME = 1 << 1


class CommandError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class MongoWireServer:
    """A loopback MongoDB server backed by mongomock. ``port=0`` picks a free port at start."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.client: mongomock.MongoClient = mongomock.MongoClient()
        self._server: MockupDB | None = None
        self._lock = threading.RLock()
        self._cursors: dict[int, tuple[str, list[dict[str, Any]]]] = {}
        self._cursor_ids = itertools.count(1000)
        #: commands seen, by name (tests use it to check what the client sent)
        self.commands: dict[str, int] = {}

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        """Listen (again) on ``port``; the first start with port 0 picks one. Returns the port."""
        server = MockupDB(port=self.port or None, request_timeout=int(1e6))
        server.autoresponds(self._handle)
        self.port = server.run()
        self._server = server
        return self.port

    def stop(self) -> None:
        """Close the listening socket and every connection; the data is kept."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._cursors.clear()

    def __enter__(self) -> MongoWireServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- dispatch ---------------------------------------------------------------------------

    def _handle(self, request: Any) -> bool:
        name = request.command_name
        cmd = {k: v for k, v in request.doc.items() if k not in _IGNORED}
        with self._lock:
            self.commands[name] = self.commands.get(name, 0) + 1
            try:
                reply = self._dispatch(name, cmd, request.namespace or "admin")
            except CommandError as exc:
                reply = {"ok": 0, "code": exc.code, "errmsg": str(exc)}
            except Exception as exc:  # a mongomock gap: say so, as a server error
                reply = {"ok": 0, "code": 1, "errmsg": f"{type(exc).__name__}: {exc}"}
        if request.flags and request.flags & _MORE_TO_COME:
            return True  # unacknowledged write: the client expects no reply
        request.replies(reply)
        return True

    def _dispatch(self, name: str, cmd: dict[str, Any], db_name: str) -> dict[str, Any]:
        lowered = name.lower()
        if lowered in {"ismaster", "hello"}:
            return {
                "ismaster": True,
                "isWritablePrimary": True,
                "helloOk": True,
                "maxBsonObjectSize": MAX_BSON_SIZE,
                "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000,
                "localTime": dt.datetime.now(dt.UTC),
                "minWireVersion": 0,
                "maxWireVersion": 17,
                "ok": 1,
            }
        if lowered in {"ping", "endsessions", "killallsessions"}:
            return {"ok": 1}
        if lowered == "buildinfo":
            return {"version": "6.0.0-mongomock", "versionArray": [6, 0, 0, 0], "ok": 1}
        handler = getattr(self, f"_cmd_{lowered}", None)
        if handler is None:
            raise CommandError(59, f"no such command: '{name}'")
        db = self.client[db_name]
        result: dict[str, Any] = handler(db, cmd[name], cmd)
        result.setdefault("ok", 1)
        return result

    # --- helpers ----------------------------------------------------------------------------

    def _cursor_reply(
        self, ns: str, docs: list[dict[str, Any]], batch_size: int | None, single: bool = False
    ) -> dict[str, Any]:
        first, rest = _split_batch(docs, batch_size if batch_size is not None else 101)
        cursor_id = 0
        if rest and not single:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = (ns, rest)
        return {"cursor": {"id": bson.int64.Int64(cursor_id), "ns": ns, "firstBatch": first}}

    @staticmethod
    def _check_size(doc: dict[str, Any] | None) -> None:
        if doc is not None and len(bson.encode(doc)) > MAX_BSON_SIZE:
            raise CommandError(17419, f"Resulting document after update is larger than {MAX_BSON_SIZE}")

    # --- commands (names are the lowercased command) -----------------------------------------

    def _cmd_insert(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        errors, n = [], 0
        for index, doc in enumerate(cmd.get("documents", [])):
            try:
                self._check_size(doc)
                db[coll].insert_one(doc)
                n += 1
            except mongomock.DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": f"E11000 duplicate key error: {exc}"})
            except CommandError as exc:
                errors.append({"index": index, "code": exc.code, "errmsg": str(exc)})
            if errors and cmd.get("ordered", True):
                break
        reply: dict[str, Any] = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _cmd_update(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        collection = db[coll]
        n = modified = 0
        upserted, errors = [], []
        for index, spec in enumerate(cmd.get("updates", [])):
            query, update = spec.get("q", {}), spec["u"]
            if spec.get("sort") and not spec.get("multi"):  # pymongo >= 4.11: the first in this order
                query = first_in_order(collection, query, spec["sort"])
            options = {"upsert": spec.get("upsert", False)}
            if spec.get("arrayFilters"):
                options["array_filters"] = spec["arrayFilters"]
            try:
                if not any(str(key).startswith("$") for key in update):
                    result = collection.replace_one(query, update, upsert=options["upsert"])
                elif spec.get("multi"):
                    result = collection.update_many(query, update, **options)
                else:
                    before = collection.find_one(query)
                    result = collection.update_one(query, update, **options)
                    changed_id = (
                        result.upserted_id
                        if result.upserted_id is not None
                        else (before["_id"] if before else None)
                    )
                    if changed_id is not None:
                        try:
                            self._check_size(collection.find_one({"_id": changed_id}))
                        except CommandError:  # undo, as the server never applied it
                            if before is None:
                                collection.delete_one({"_id": changed_id})
                            else:
                                collection.replace_one({"_id": changed_id}, before)
                            raise
            except mongomock.DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": f"E11000 duplicate key error: {exc}"})
                break
            except CommandError as exc:
                errors.append({"index": index, "code": exc.code, "errmsg": str(exc)})
                break
            except mongomock.WriteError as exc:
                errors.append({"index": index, "code": getattr(exc, "code", 2) or 2, "errmsg": str(exc)})
                break
            n += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": index, "_id": result.upserted_id})
        reply: dict[str, Any] = {"n": n, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _cmd_delete(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        n = 0
        for spec in cmd.get("deletes", []):
            if spec.get("limit", 0) == 1:
                n += db[coll].delete_one(spec.get("q", {})).deleted_count
            else:
                n += db[coll].delete_many(spec.get("q", {})).deleted_count
        return {"n": n}

    def _cmd_find(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        sort = list(cmd["sort"].items()) if cmd.get("sort") else None
        limit = int(cmd.get("limit", 0) or 0)
        cursor = db[coll].find(
            cmd.get("filter", {}),
            cmd.get("projection") or None,
            skip=int(cmd.get("skip", 0) or 0),
            limit=abs(limit),
            sort=sort,
        )
        docs = list(cursor)
        single = bool(cmd.get("singleBatch")) or limit < 0
        return self._cursor_reply(f"{db.name}.{coll}", docs, cmd.get("batchSize"), single)

    def _cmd_getmore(self, db: Any, cursor_id: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        if int(cursor_id) not in self._cursors:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        ns, docs = self._cursors.pop(int(cursor_id))
        batch, rest = _split_batch(docs, cmd.get("batchSize") or len(docs))
        next_id = 0
        if rest:
            next_id = int(cursor_id)
            self._cursors[next_id] = (ns, rest)
        return {"cursor": {"id": bson.int64.Int64(next_id), "ns": ns, "nextBatch": batch}}

    def _cmd_killcursors(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        killed = [cursor for cursor in cmd.get("cursors", []) if self._cursors.pop(int(cursor), None)]
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": []}

    def _cmd_findandmodify(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        collection = db[coll]
        query, sort = cmd.get("query", {}), list(cmd["sort"].items()) if cmd.get("sort") else None
        projection = cmd.get("fields") or None
        existed = collection.find_one(query) is not None
        if cmd.get("remove"):
            value = collection.find_one_and_delete(query, projection=projection, sort=sort)
            return {"lastErrorObject": {"n": int(value is not None)}, "value": value}
        update = cmd.get("update", {})
        after = bool(cmd.get("new"))  # pymongo.ReturnDocument: BEFORE=False, AFTER=True
        upsert = bool(cmd.get("upsert"))
        try:
            if any(str(key).startswith("$") for key in update):
                value = collection.find_one_and_update(
                    query, update, projection=projection, sort=sort, upsert=upsert, return_document=after
                )
            else:
                value = collection.find_one_and_replace(
                    query, update, projection=projection, sort=sort, upsert=upsert, return_document=after
                )
        except mongomock.DuplicateKeyError as exc:
            raise CommandError(11000, f"E11000 duplicate key error: {exc}") from None
        last: dict[str, Any] = {"n": int(existed or upsert), "updatedExisting": existed}
        return {"lastErrorObject": last, "value": value}

    def _cmd_count(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        kwargs = {key: int(cmd[key]) for key in ("skip", "limit") if cmd.get(key)}
        return {"n": db[coll].count_documents(cmd.get("query") or {}, **kwargs)}

    def _cmd_distinct(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"values": db[coll].distinct(cmd["key"], cmd.get("query") or {})}

    def _cmd_aggregate(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        docs = list(db[coll].aggregate(cmd.get("pipeline", [])))
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(f"{db.name}.{coll}", docs, batch)

    def _cmd_create(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if coll in db.list_collection_names():
            raise CommandError(48, f"Collection {db.name}.{coll} already exists.")
        db.create_collection(coll)
        return {}

    def _cmd_drop(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        db.drop_collection(coll)
        return {}

    def _cmd_dropdatabase(self, db: Any, _: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        self.client.drop_database(db.name)
        return {}

    def _cmd_createindexes(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        collection = db[coll]
        before = len(collection.index_information())
        for index in cmd.get("indexes", []):
            options = {key: value for key, value in index.items() if key in {"name", "unique", "sparse"}}
            collection.create_index(list(index["key"].items()), **options)
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": len(collection.index_information()),
            "createdCollectionAutomatically": before == 0,
        }

    def _cmd_listindexes(self, db: Any, coll: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if coll not in db.list_collection_names():
            raise CommandError(26, f"ns does not exist: {db.name}.{coll}")
        docs = []
        for name, info in db[coll].index_information().items():
            doc: dict[str, Any] = {"v": 2, "key": dict(info["key"]), "name": name}
            if info.get("unique"):
                doc["unique"] = True
            docs.append(doc)
        return self._cursor_reply(f"{db.name}.$cmd.listIndexes.{coll}", docs, None)

    def _cmd_listcollections(self, db: Any, _: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        wanted = (cmd.get("filter") or {}).get("name")
        docs = [
            {"name": name, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for name in db.list_collection_names()
            if wanted is None or name == wanted
        ]
        return self._cursor_reply(f"{db.name}.$cmd.listCollections", docs, None)

    def _cmd_listdatabases(self, db: Any, _: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        names = self.client.list_database_names()
        return {
            "databases": [{"name": name, "sizeOnDisk": 0, "empty": False} for name in names],
            "totalSize": 0,
        }


def _split_batch(docs: list[dict[str, Any]], size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """At most ``size`` documents (0: no limit) and at most ~8 MB, like a real server."""
    size = size or len(docs) or 1
    total, count = 0, 0
    for doc in docs[:size]:
        total += len(bson.encode(doc))
        if count and total > _BATCH_BYTES:
            break
        count += 1
    return docs[:count], docs[count:]


mongomock.gridfs.enable_gridfs_integration()
patch_mongomock()

if __name__ == "__main__":
    host_port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    wire = MongoWireServer(host_port)
    print(f"READY {wire.start()}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        wire.stop()
