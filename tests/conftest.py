"""Session fixtures: one real Prefect server for the whole session, and the backends.

The server is a real ``prefect server start`` subprocess on a free port with its own
PREFECT_HOME, so in-process flows and the subprocesses the tests start (command-line runs,
served deployments) all talk to it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Configure Prefect before anything imports it.
_HOME = tempfile.mkdtemp(prefix="prefect-sacred-tests-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.5"
os.environ.pop("PREFECT_SACRED_OBSERVERS", None)
# Runs' journals (and those of the subprocesses the tests start) stay inside the session.
os.environ["PREFECT_SACRED_JOURNAL_DIR"] = os.path.join(_HOME, "journal")

from tests.support import PYTHON, free_port  # noqa: E402

_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PORT}/api"
os.environ["PREFECT_UI_URL"] = f"http://127.0.0.1:{_PORT}"

import httpx  # noqa: E402
import pytest  # noqa: E402

from tests.backends import Backend, BackendUnavailable, load_backends  # noqa: E402
from tests.servers.tcp_proxy import mariadb_proxy, mongo_proxy, pg_proxy  # noqa: E402, F401  (fixtures)
from tests.support import service_missing  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    log = open(Path(_HOME) / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"prefect server did not start; see {log.name}", pytrace=False)
        time.sleep(0.25)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # Prefect's own 180 s flow heartbeat costs ~1 s per in-process flow run at exit.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield url
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # before the server goes away
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


_started: dict[str, Backend] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend`` over tests/backends; a test class may prefix the test ids
    (``backend_id_prefix = "queued_"`` gives ``[queued_file_storage]``), sharing the backends."""
    if "backend" in metafunc.fixturenames:
        names = [backend.name for backend in load_backends()]
        prefix = getattr(metafunc.cls, "backend_id_prefix", "")
        ids = [f"{prefix}{name}" for name in names]
        metafunc.parametrize("backend", names, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    instance = next(b for b in load_backends() if b.name == request.param)
    try:
        instance.start(tmp_path_factory)
    except BackendUnavailable as exc:
        service_missing(f"{instance.name}: {exc}")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def every_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    """All eight contract backends at once, started once for the session (tests/backends/every.py);
    a test takes fresh namespaces with ``every.Fresh``."""
    from tests.backends import every

    with every.started(tmp_path_factory) as backends:
        yield backends
