"""The FileStorageObserver under the contract suite: reads runs back from Sacred's layout."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path
from typing import Any

from prefect_sacred import FileStorageObserver
from tests.backends import Backend, RunRecord


def _date(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


class FileStorageBackend(Backend):
    name = "file_storage"

    def start(self, tmp_path_factory: Any) -> None:
        self.root = tmp_path_factory.mktemp("file_storage")
        self._count = itertools.count()
        self.basedir = self.root / "none"

    def observer(self) -> FileStorageObserver:
        self.basedir = self.root / f"runs{next(self._count)}"
        return FileStorageObserver(self.basedir)

    def url(self) -> str:
        return f"file://{self.basedir}"

    def cli_args(self) -> list[str]:
        return ["-F", str(self.basedir)]

    def run_ids(self) -> list[str]:
        basedir = Path(self.basedir)
        return [entry.name for entry in basedir.iterdir() if entry.name.isdigit()] if basedir.exists() else []

    def record(self, run_id: Any) -> RunRecord:
        run_dir = Path(self.basedir, str(run_id))
        run = json.loads((run_dir / "run.json").read_text())
        info_path = run_dir / "info.json"
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        return RunRecord(
            status=run["status"],
            config=json.loads((run_dir / "config.json").read_text()),
            info=json.loads(info_path.read_text()) if info_path.exists() else {},
            result=run.get("result"),
            captured_out=(run_dir / "cout.txt").read_text() if run["status"] != "QUEUED" else "",
            heartbeat=_date(run.get("heartbeat")),
            start_time=_date(run.get("start_time")),
            stop_time=_date(run.get("stop_time")),
            fail_trace=run.get("fail_trace"),
            metrics={name: {"steps": m["steps"], "values": m["values"]} for name, m in metrics.items()},
            artifacts={name: (run_dir / name).read_bytes() for name in run.get("artifacts", [])},
            resources=[os.path.basename(filename) for filename, _ in run.get("resources", [])],
            meta=run.get("meta", {}),
        )
