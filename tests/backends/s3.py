"""S3Observer under the contract suite, over HTTP against moto's S3 server.

The session starts moto's S3 server (``tests.servers.moto_s3``) on a loopback port; subprocesses
(command-line runs, served deployments) reach it through ``?endpoint_url=`` in the observer's
URL and the test credentials in the environment. Each ``observer()`` writes below a fresh
prefix; runs are read back from the bucket in Sacred's layout with plain boto3
(``read_bucket_run``, shared with the GCS backend).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import uuid
from typing import Any

from prefect_sacred.observers.object_store.bucket import Bucket
from prefect_sacred.observers.object_store.growing import read_metrics, read_output
from tests.backends import Backend, BackendUnavailable, RunRecord
from tests.support import free_port

BUCKET = "contract"


def _date(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def read_bucket_run(store: Bucket, basedir: str, run_id: Any) -> RunRecord:
    """A run stored in FileStorage's layout below ``basedir`` (cout.txt and metrics.json
    continued by their parts while the run is live)."""
    run_key = f"{basedir}/{run_id}"

    def load(name: str) -> Any:
        data = store.get(f"{run_key}/{name}")
        return json.loads(data) if data else None

    run = load("run.json")
    if run is None:
        raise LookupError(f"no run {run_id!r} below {basedir}")
    metrics = read_metrics(store, run_key)
    artifacts = {}
    for name in run.get("artifacts", []):
        artifacts[name] = store.get(f"{run_key}/{name}") or b""
    return RunRecord(
        status=run["status"],
        config=load("config.json") or {},
        info=load("info.json") or {},
        result=run.get("result"),
        captured_out=read_output(store, f"{run_key}/cout.txt"),
        heartbeat=_date(run.get("heartbeat")),
        start_time=_date(run.get("start_time")),
        stop_time=_date(run.get("stop_time")),
        fail_trace=run.get("fail_trace"),
        metrics={name: {"steps": m["steps"], "values": m["values"]} for name, m in metrics.items()},
        artifacts=artifacts,
        resources=[os.path.basename(filename) for filename, _ in run.get("resources", [])],
        meta=run.get("meta", {}),
    )


def bucket_run_ids(store: Bucket, basedir: str) -> list[str]:
    """The ids of the runs below ``basedir``: its folders, but for ``_sources/`` and ``_resources/``."""
    _, prefixes = store.listing(f"{basedir}/", "/")
    names = [prefix.rstrip("/").rsplit("/", 1)[-1] for prefix in prefixes]
    return [each for each in names if not each.startswith("_")]


class S3Backend(Backend):
    name = "s3"

    def start(self, tmp_path_factory: Any) -> None:
        try:
            import boto3

            from tests.servers.moto_s3 import AtomicMotoServer
        except ImportError as exc:
            raise BackendUnavailable(f"pip install boto3 'moto[s3,server]' ({exc})") from None
        os.environ["AWS_ACCESS_KEY_ID"] = "testing"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
        self.port = free_port()
        self.server = AtomicMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        from prefect_sacred.observers.object_store.s3 import S3Bucket

        self.store = S3Bucket(BUCKET, boto3.session.Session(), "us-east-1", self.endpoint)
        self.store.check()  # creates the bucket
        self._count = itertools.count()
        # moto keeps one S3 state per process, shared by every server started in it: prefixes
        # of this backend must not meet another's (the session's and a test module's).
        self._tag = uuid.uuid4().hex[:8]
        self.basedir = "none"

    def stop(self) -> None:
        self.server.stop()

    def observer(self) -> Any:
        from prefect_sacred import S3Observer

        self.basedir = f"runs-{self._tag}-{next(self._count)}"
        return S3Observer(BUCKET, self.basedir, endpoint_url=self.endpoint)

    def url(self) -> str:
        return f"s3://{BUCKET}/{self.basedir}?endpoint_url={self.endpoint}"

    def cli_args(self) -> list[str]:
        return ["-S", self.url()]

    def run_ids(self) -> list[str]:
        return bucket_run_ids(self.store, self.basedir)

    def record(self, run_id: Any) -> RunRecord:
        return read_bucket_run(self.store, self.basedir, run_id)
