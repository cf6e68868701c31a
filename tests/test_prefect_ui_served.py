"""A served run cancelled, and one whose process is SIGKILLed, still get their Prefect artifacts.

The serve process records those ends: there the Prefect UI observer is rebuilt beside the
deployment's observers, takes the live metric table the run published as its history, and
publishes the summary and the links.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.support import PYTHON, REPO, serving, subprocess_env, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[str]:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(PREFECT_SACRED_OBSERVERS="file://./runs")  # relative: made absolute
    script = REPO / "tests" / "data" / "ui_served.py"
    with serving(script, name, f"ui-served/{name}", tmp_path, env) as deployment:
        yield deployment


def _artifacts(flow_run_id: Any) -> dict[str | None, list[Any]]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key: dict[str | None, list[Any]] = {}
    for artifact in found:
        by_key.setdefault(artifact.key, []).append(artifact)
    return by_key


def _start(deployment: str) -> tuple[Any, str]:
    """A running served run with live artifacts: (flow run id, experiment run id)."""
    from prefect.deployments import run_deployment

    flow_run: Any = run_deployment(deployment, parameters={"seconds": 60}, timeout=0)

    def live_table() -> str | None:
        with get_client(sync_client=True) as client:
            run_id = (client.read_flow_run(flow_run.id).labels or {}).get("prefect-sacred.run-id")
        tables = _artifacts(flow_run.id).get(f"ui-served-run-{run_id}-metrics", [])
        return str(run_id) if tables and tables[0].data[0]["points"] >= 5 else None

    return flow_run.id, wait_for(live_table, timeout=90, interval=0.5, what="the run's live metric table")


def _summary(flow_run_id: Any, run_id: str) -> Any:
    def published() -> Any:
        return (_artifacts(flow_run_id).get(f"ui-served-run-{run_id}") or [None])[0]

    return wait_for(published, timeout=60, interval=0.5, what="the summary published by the serve process")


def test_cancelled_and_killed_served_runs_get_their_summary_table_and_links(
    deployment: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"

    flow_run_id, run_id = _start(deployment)
    done = subprocess.run(
        [PYTHON, "-m", "prefect", "flow-run", "cancel", str(flow_run_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = _summary(flow_run_id, run_id)
    assert summary.description.startswith(f"ui-served run {run_id}: INTERRUPTED")
    assert f"# ui-served run {run_id}: INTERRUPTED" in summary.data
    # The history is the live table's: the serve process never saw the points.
    points = int(summary.data.split("| loss |")[1].split("|")[3])
    assert points >= 5
    assert "](data:image/svg+xml;base64," in summary.data  # plotted from the samples saved live
    assert '"seconds": 60' in summary.data
    # The serve process took over the live table and progress bar instead of adding others.
    artifacts = _artifacts(flow_run_id)
    assert len(artifacts[f"ui-served-run-{run_id}-metrics"]) == 1
    assert len([a for a in artifacts.get(None, []) if a.type == "progress"]) == 1
    links = [a for a in artifacts.get(None, []) if a.type == "markdown"]
    assert [link.data for link in links] == [f"[{runs / run_id}](file://{runs / run_id})"]

    flow_run_id, run_id = _start(deployment)
    pid = json.loads((runs / run_id / "info.json").read_text())["pid"]
    os.kill(int(pid), signal.SIGKILL)
    summary = _summary(flow_run_id, run_id)
    assert summary.description.startswith(f"ui-served run {run_id}: FAILED")
    assert "## Error" in summary.data and "SIGKILL" in summary.data
    with get_client(sync_client=True) as client:
        assert f"sacred-id:{run_id}" in client.read_flow_run(flow_run_id).tags
