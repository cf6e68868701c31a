"""The README's deployment path, for real: serve.py, then `prefect deployment run experiment/train`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO, subprocess_env, wait_for

pytestmark = pytest.mark.slow


def test_a_deployment_run_from_the_cli_is_recorded_and_summarised_in_prefect(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    serve = subprocess.Popen(
        [PYTHON, "serve.py"],
        cwd=REPO / "deployments",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=subprocess_env(PREFECT_SACRED_OBSERVERS=f"file://{runs}"),
        start_new_session=True,
    )
    try:

        def run_created() -> str | None:
            done = subprocess.run(
                [PYTHON, "-m", "prefect", "deployment", "run", "experiment/train", "--param", "epochs=3"],
                capture_output=True,
                text=True,
                timeout=60,
                env=subprocess_env(),
            )
            match = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
            return match.group(1) if done.returncode == 0 and match else None

        flow_run_id = wait_for(run_created, timeout=60, interval=1, what="the deployment to accept a run")
        run_json = runs / "1" / "run.json"
        record = wait_for(
            lambda: (r := json.loads(run_json.read_text()))["status"] == "COMPLETED" and r,
            timeout=90,
            interval=0.5,
            what="the served run to complete",
        )
    finally:
        serve.terminate()
        serve.wait(20)
    assert json.loads((runs / "1" / "config.json").read_text())["epochs"] == 3
    assert json.loads((runs / "1" / "metrics.json").read_text())["training.loss"]["steps"] == [0, 1, 2]
    assert record["artifacts"] == ["model.json"]
    assert record["meta"]["prefect"]["flow_run_id"] == flow_run_id
    assert "epoch 3/3" in (runs / "1" / "cout.txt").read_text()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        labels = client.read_flow_run(flow_run_id).labels
    summary = next(a for a in artifacts if a.key == "experiment-run-1")
    assert "| **Status** | COMPLETED |" in summary.data
    assert f"FileStorageObserver: `{runs / '1'}`" in summary.data
    assert '"epochs": 3' in summary.data
    assert labels["prefect-sacred.run-id"] == "1"
