"""The TinyDbObserver under the contract suite: runs read back through TinyDbReader."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from prefect_sacred import TinyDbObserver, TinyDbReader
from tests.backends import Backend, RunRecord


class TinyDbBackend(Backend):
    name = "tinydb"

    def start(self, tmp_path_factory: Any) -> None:
        self.root = tmp_path_factory.mktemp("tinydb")
        self._count = itertools.count()
        self.basedir = self.root / "none"

    def observer(self) -> TinyDbObserver:
        self.basedir = self.root / f"runs{next(self._count)}"
        return TinyDbObserver(self.basedir)

    def url(self) -> str:
        return f"tinydb://{self.basedir}"

    def cli_args(self) -> list[str]:
        return ["-t", str(self.basedir)]

    def run_ids(self) -> list[str]:
        path = Path(self.basedir) / "metadata.json"
        tables = json.loads(path.read_text()) if path.exists() else {}
        return [str(doc["_id"]) for doc in tables.get("runs", {}).values()]

    def record(self, run_id: Any) -> RunRecord:
        from tinydb import Query

        key = str(run_id).rsplit("#run=", 1)[-1]
        reader = TinyDbReader(self.basedir)
        query = Query()._id.test(lambda value: str(value) == key)
        run = reader.fetch_metadata(query=query)[-1]
        metrics = reader.fetch_metrics(query=query)[-1]
        artifacts = {}
        for name, _filename, _md5, handle in run.get("artifacts", []):
            with handle:
                artifacts[name] = handle.read()
        for _name, _md5, handle in run["experiment"].get("sources", []):
            if handle is not None:
                handle.close()
        for _name, _md5, handle in run.get("resources", []):
            handle.close()
        return RunRecord(
            status=run["status"],
            config=run.get("config", {}),
            info=run.get("info", {}),
            result=run.get("result"),
            captured_out=run.get("captured_out", ""),
            heartbeat=run.get("heartbeat"),
            start_time=run.get("start_time"),
            stop_time=run.get("stop_time"),
            fail_trace=run.get("fail_trace"),
            metrics={name: {"steps": m["steps"], "values": m["values"]} for name, m in metrics.items()},
            artifacts=artifacts,
            resources=[os.path.basename(entry[0]) for entry in run.get("resources", [])],
            meta=run.get("meta", {}),
        )
