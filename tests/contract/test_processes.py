"""Contract scenarios that need real processes: SIGTERM, and served runs cancelled or killed.

A served run's cancellation and the SIGKILL of its process fire hooks in the serve process, which
rebuilds the observers from the experiment module and PREFECT_SACRED_OBSERVERS and reads the
run's id back from the flow run's labels.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.flows.prefect_api import RUN_ID_LABEL
from tests.backends import Backend
from tests.support import PYTHON, subprocess_env, wait_for

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def _run_id(text: str) -> Any:
    match = re.search(r'Started run with ID "([^"]+)"', text)
    assert match, f"no run id in the output:\n{text[-3000:]}"
    value = match.group(1)
    return int(value) if value.isdigit() and not value.startswith("0") else value


@pytest.mark.parametrize("mode", ["sigterm", "sigint"])
def test_sigterm_or_ctrl_c_of_a_command_line_run_is_recorded_as_interrupted(
    backend: Backend, mode: str
) -> None:
    backend.observer()  # fresh storage for this run
    done = subprocess.run(
        [PYTHON, str(HERE / "scripts_cli.py"), "with", f"mode={mode}", *backend.cli_args()],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=HERE,
        # A non-interactive shell starts children with SIGINT ignored; a terminal would not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode != 0, done.stderr[-3000:]
    record = backend.record(_run_id(done.stderr + done.stdout))
    assert record.status == "INTERRUPTED"
    assert f"cli run {mode}" in record.captured_out
    assert record.stop_time is not None


@pytest.fixture(scope="module")
def served(backend: Backend) -> Iterator[tuple[Backend, str]]:
    """A serve process for ``scripts_served.py`` whose observers write into ``backend``."""
    backend.observer()
    deployment = f"contract-{backend.name}".replace("_", "-")
    log = open(HERE / f".serve-{deployment}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, str(HERE / "scripts_served.py"), deployment],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=HERE,
        env=subprocess_env(PREFECT_SACRED_OBSERVERS=backend.url()),
        start_new_session=True,
    )
    from prefect.client.orchestration import get_client

    def deployment_exists() -> bool:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(f"served/{deployment}")
        return True

    try:
        wait_for(deployment_exists, timeout=60, interval=0.5, what="the served deployment")
        yield backend, f"served/{deployment}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _start_served_run(name: str) -> tuple[Any, Any]:
    """Create a run of the deployment; return (flow run id, experiment run id) once it runs."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters={"seconds": 60}, timeout=0)

    def labelled() -> Any:
        with get_client(sync_client=True) as client:
            return (client.read_flow_run(flow_run.id).labels or {}).get(RUN_ID_LABEL)

    return flow_run.id, wait_for(labelled, timeout=90, interval=0.5, what="the run to start")


def test_cancelling_a_served_run_records_it_as_interrupted(served: tuple[Backend, str]) -> None:
    backend, name = served
    flow_run_id, run_id = _start_served_run(name)
    assert backend.record(run_id).status == "RUNNING"
    done = subprocess.run(
        [PYTHON, "-m", "prefect", "flow-run", "cancel", str(flow_run_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    record = wait_for(
        lambda: (r := backend.record(run_id)).status == "INTERRUPTED" and r,
        timeout=60,
        interval=0.5,
        what="the run to be recorded as INTERRUPTED",
    )
    assert record.stop_time is not None


def test_sigkill_of_a_served_run_is_recorded_from_the_serve_process(served: tuple[Backend, str]) -> None:
    backend, name = served
    _, run_id = _start_served_run(name)
    pid = wait_for(lambda: backend.record(run_id).info.get("pid"), timeout=30, what="the run's pid")
    os.kill(int(pid), signal.SIGKILL)
    record = wait_for(
        lambda: (r := backend.record(run_id)).status != "RUNNING" and r,
        timeout=60,
        interval=0.5,
        what="the killed run to leave RUNNING",
    )
    assert record.status == "FAILED"
    assert record.fail_trace and "SIGKILL" in "".join(record.fail_trace)
