"""The MongoObserver under the contract suite, over the wire: pymongo -> TCP -> mongomock.

No real mongod can be installed here, so the session starts ``tests/servers/mongo_wire.py`` on
a loopback port; subprocesses (command-line runs, served deployments) reach it too. Each
``observer()`` writes into a fresh database; runs are read back with plain pymongo/GridFS in
Sacred's format (not through the observer).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from prefect_sacred import MongoObserver
from tests.backends import Backend, BackendUnavailable, RunRecord


def read_run(database: Any, run_id: Any, runs: str = "runs", metrics: str = "metrics") -> RunRecord:
    """A run stored in Sacred's Mongo format, with the full output and every metric point."""
    import gridfs

    from prefect_sacred.observers.mongo import read_captured_out, read_metric

    doc = database[runs].find_one({"_id": run_id})
    if doc is None:
        raise LookupError(f"no run {run_id!r} in {database.name}.{runs}")
    fs = gridfs.GridFS(database)
    captured_out = read_captured_out(database, doc)
    if doc.get("captured_out_file") is not None and doc["status"] not in {"RUNNING", "QUEUED"}:
        # A finished run's file alone is its whole output, for readers that know only GridFS.
        assert fs.get(doc["captured_out_file"]).read().decode("utf-8") == captured_out
    series = {}
    for ref in (doc.get("info") or {}).get("metrics", []):
        full = read_metric(database[metrics], database[f"{metrics}_chunks"], run_id, ref["name"])
        series[ref["name"]] = {"steps": full["steps"], "values": full["values"]}
    return RunRecord(
        status=doc["status"],
        config=doc.get("config") or {},
        info=doc.get("info") or {},
        result=doc.get("result"),
        captured_out=captured_out,
        heartbeat=doc.get("heartbeat"),
        start_time=doc.get("start_time"),
        stop_time=doc.get("stop_time"),
        fail_trace=doc.get("fail_trace"),
        metrics=series,
        artifacts={a["name"]: fs.get(a["file_id"]).read() for a in doc.get("artifacts", [])},
        resources=[os.path.basename(filename) for filename, _ in doc.get("resources", [])],
        meta=doc.get("meta") or {},
    )


class MongoBackend(Backend):
    name = "mongo"

    def start(self, tmp_path_factory: Any) -> None:
        try:
            import mockupdb  # noqa: F401
            import mongomock  # noqa: F401
            import pymongo
        except ImportError as exc:
            raise BackendUnavailable(f"pip install pymongo mongomock mockupdb ({exc})") from None
        from tests.servers.mongo_wire import MongoWireServer

        self.server = MongoWireServer()
        self.server.start()
        self.client = pymongo.MongoClient(self.server.uri, serverSelectionTimeoutMS=5000)
        self._count = itertools.count()
        self.db_name = "none"

    def stop(self) -> None:
        self.client.close()
        self.server.stop()

    def observer(self) -> MongoObserver:
        self.db_name = f"contract{next(self._count)}"
        return MongoObserver(url=self.server.uri, db_name=self.db_name)

    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.server.port}/{self.db_name}?directConnection=true"

    def cli_args(self) -> list[str]:
        return ["-m", f"127.0.0.1:{self.server.port}:{self.db_name}"]

    def run_ids(self) -> list[str]:
        return [str(doc["_id"]) for doc in self.client[self.db_name].runs.find({}, {"_id": 1})]

    def record(self, run_id: Any) -> RunRecord:
        return read_run(self.client[self.db_name], _numeric(run_id))


def _numeric(run_id: Any) -> Any:
    text = str(run_id)
    if "/" in text:  # a run_location(): mongodb://host:port/db.runs/<id>
        text = text.rsplit("/", 1)[1]
    return int(text) if text.isdigit() else run_id
