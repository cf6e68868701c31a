"""Reading back a sweep run on another task runner (Dask, Ray): its FileStorage runs and the
summary artifact on its parent flow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def file_runs(basedir: Path) -> dict[str, dict[str, Any]]:
    """Each FileStorage run below ``basedir``, by id: run.json, config, output, metrics, info."""
    runs = {}
    for run_dir in sorted(basedir.iterdir()):
        if run_dir.name.isdigit():
            runs[run_dir.name] = {
                "run": json.loads((run_dir / "run.json").read_text()),
                "config": json.loads((run_dir / "config.json").read_text()),
                "cout": (run_dir / "cout.txt").read_text(),
                "metrics": json.loads((run_dir / "metrics.json").read_text()),
                "info": json.loads((run_dir / "info.json").read_text()),
            }
    return runs


def sweep_summary(flow_run_id: Any) -> str:
    """The sweep's summary artifact on the parent flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    [summary] = [a for a in artifacts if (a.key or "").startswith("sweep-")]
    return str(summary.data)
