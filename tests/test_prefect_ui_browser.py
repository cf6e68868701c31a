"""The example deployment's runs as a user sees them: the Prefect UI rendered by headless Chromium.

A completed, a failed and a cancelled run of ``deployments/serve.py``'s ``experiment/train``;
for each, the flow run's Artifacts tab, its summary (the plot is an image the page renders)
and its progress, then the Artifacts page. The assertions read the DOM Chromium rendered, not
the API. With ``PREFECT_SACRED_SCREENSHOTS=DIR`` the screenshots are also copied to DIR (that
is how ``docs/screenshots/`` is made).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.support import PYTHON, REPO, service_missing, subprocess_env, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(url: str, screenshot: Path, height: int = 1300) -> str:
    """The page's DOM after its scripts ran; its screenshot goes to ``screenshot``."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size=1280,{height}",
                "--virtual-time-budget=15000", f"--screenshot={screenshot}", "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=90,
        )
    assert done.returncode == 0 and screenshot.exists(), done.stderr[-2000:]
    return done.stdout


def _keep(*shots: Path) -> None:
    """Copy screenshots to ``PREFECT_SACRED_SCREENSHOTS`` when it is set (docs/screenshots/)."""
    keep = os.environ.get("PREFECT_SACRED_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(keep) / shot.name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if CHROMIUM is None:
        service_missing("chromium is not installed (Debian: apt-get install -y chromium)")
    runs = tmp_path_factory.mktemp("ui") / "my_runs"
    serve = subprocess.Popen(
        [PYTHON, "serve.py"], cwd=REPO / "deployments", stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        env=subprocess_env(PREFECT_SACRED_OBSERVERS=f"file://{runs}"), start_new_session=True,
    )

    def deployed() -> bool:
        assert serve.poll() is None, "serve.py exited"
        with get_client(sync_client=True) as client:
            return not client.read_deployment_by_name("experiment/train").paused
        return False

    try:
        wait_for(deployed, timeout=60, interval=0.5, what="the served example deployment")
        yield runs
    finally:
        serve.terminate()
        serve.wait(20)


def _artifacts(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def _run(parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment

    flow_run: Any = run_deployment("experiment/train", parameters=parameters, timeout=0)
    return flow_run.id


def _summary(flow_run_id: Any) -> Any:
    def published() -> Any:
        return next((a for a in _artifacts(flow_run_id) if a.key and not a.key.endswith("-metrics")), None)

    return wait_for(published, timeout=120, interval=0.5, what="the run's summary artifact")


def _cancel_when_live(flow_run_id: Any) -> None:
    def live() -> bool:
        kinds = {artifact.type for artifact in _artifacts(flow_run_id)}
        return {"table", "progress"} <= kinds

    wait_for(live, timeout=120, interval=0.5, what="the live metric table and progress bar")
    done = subprocess.run(
        [PYTHON, "-m", "prefect", "flow-run", "cancel", str(flow_run_id)],
        capture_output=True, text=True, timeout=60, env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("status", "parameters"),
    [
        ("COMPLETED", {"epochs": 3}),
        ("FAILED", {"epochs": 10, "lr": 1e150}),  # the loss diverges: the example raises
        ("INTERRUPTED", {"epochs": 1000, "sleep": 0.2}),  # cancelled while it trains
    ],
)
def test_the_prefect_ui_shows_progress_metrics_plots_and_links(
    served: Path, status: str, parameters: dict[str, Any], tmp_path: Path
) -> None:
    ui = os.environ["PREFECT_UI_URL"].rstrip("/") + "/v2"
    flow_run_id = _run(parameters)
    if status == "INTERRUPTED":
        _cancel_when_live(flow_run_id)
    summary = _summary(flow_run_id)
    run_id = summary.key.removeprefix("experiment-run-")
    assert summary.description.startswith(f"experiment run {run_id}: {status}")
    name = status.lower()
    shots = tmp_path / "shots"
    shots.mkdir()

    page = _render(f"{ui}/runs/flow-run/{flow_run_id}?tab=Artifacts", shots / f"{name}-flow-run.png")
    assert f"sacred-id:{run_id}" in page  # the tag, beside the run's name
    assert f"experiment-run-{run_id}" in page and f"experiment-run-{run_id}-metrics" in page
    assert f"FileStorageObserver: {served / run_id}" in page  # the link's card
    assert f"experiment run {run_id}: {status}" in page
    assert "training.loss" in page  # the metrics card says the latest, min and max
    if status != "FAILED":
        assert "/1000 (" in page or "3/3 (100%)" in page  # the progress card

    page = _render(f"{ui}/artifacts/artifact/{summary.id}", shots / f"{name}-summary.png", height=2000)
    assert f"experiment run {run_id}: {status}" in page
    assert 'src="data:image/svg+xml;base64,' in page  # the plot, rendered as an image
    assert "training.loss" in page and "Stored by" in page
    if status == "FAILED":
        assert "FloatingPointError" in page

    table = next(a for a in _artifacts(flow_run_id) if a.type == "table")
    page = _render(f"{ui}/artifacts/artifact/{table.id}", shots / f"{name}-metrics.png", height=700)
    assert "training.loss" in page and "latest" in page and "max" in page

    if status == "INTERRUPTED":
        progress = next(a for a in _artifacts(flow_run_id) if a.type == "progress")
        page = _render(f"{ui}/artifacts/artifact/{progress.id}", shots / f"{name}-progress.png", height=600)
        assert re.search(r"Progress: [\d.]+%", page)
        page = _render(f"{ui}/artifacts", shots / "artifacts-page.png", height=900)
        assert f"experiment-run-{run_id}" in page

    _keep(*shots.iterdir())


def test_the_deployment_form_describes_each_parameter_and_takes_an_optional_seed(
    served: Path, tmp_path: Path
) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("experiment/train")
    ui = os.environ["PREFECT_UI_URL"].rstrip("/") + "/v2"
    shot = tmp_path / "deployment-form.png"
    page = _render(f"{ui}/deployments/deployment/{deployment.id}/run", shot, height=1300)
    assert "passes of gradient descent over the data" in page  # the config comment
    assert "seed (Optional)" in page and "the random seed for this experiment" in page
    assert "Property is type None" not in page
    _keep(shot)
