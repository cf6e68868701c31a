"""The example deployment's runs as a user sees them: the Prefect UI rendered by headless Chromium.

A completed, a failed and a cancelled run of ``deployments/serve.py``'s ``experiment/train``;
for each, the flow run's Artifacts tab, its summary (the plot is an image the page renders)
and its progress, then the Artifacts page. The assertions read the DOM Chromium rendered, not
the API. With ``PREFECT_SACRED_SCREENSHOTS=DIR`` the screenshots are also copied to DIR (that
is how ``docs/screenshots/`` is made).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import State, StateType
from prefect.client.schemas.responses import SetStateStatus

from tests.browser import CHROMIUM, Browser
from tests.support import PYTHON, REPO, service_missing, subprocess_env, wait_for

pytestmark = pytest.mark.slow

STARTED: dict[str, dict[str, Any]] = {
    "COMPLETED": {"epochs": 3},
    "FAILED": {"epochs": 10, "lr": 1e150},  # the loss diverges: the example raises
    "INTERRUPTED": {"epochs": 1000, "sleep": 0.2},  # cancelled while it trains
}


def _shows(*texts: str) -> Callable[[str], bool]:
    """Whether a page shows every one of ``texts`` (the browser waits for it)."""
    return lambda page: all(text in page for text in texts)


def _keep(*shots: Path) -> None:
    """Copy screenshots to ``PREFECT_SACRED_SCREENSHOTS`` when it is set (docs/screenshots/)."""
    keep = os.environ.get("PREFECT_SACRED_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(keep) / shot.name)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One Chromium for the module; each page renders in a new tab."""
    if CHROMIUM is None:
        service_missing("chromium is not installed (Debian: apt-get install -y chromium)")
    instance = Browser(tmp_path_factory.mktemp("chromium"))
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def served(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    runs = tmp_path_factory.mktemp("ui") / "my_runs"
    serve = subprocess.Popen(
        [PYTHON, "serve.py"],
        cwd=REPO / "deployments",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=subprocess_env(PREFECT_SACRED_OBSERVERS=f"file://{runs}"),
        start_new_session=True,
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


@pytest.fixture(scope="module")
def flow_runs(served: Path) -> Iterator[dict[str, Any]]:
    """The flow run ids of ``STARTED``, created at once so that their processes start side by side."""
    ids = {status: _run(parameters) for status, parameters in STARTED.items()}
    yield ids
    # A run whose test was deselected (or failed) would outlive serve.py: stop it first, best
    # effort (a failure here would only hide the test's own).
    with get_client(sync_client=True) as client:

        def final(flow_run_id: Any) -> bool:
            now = client.read_flow_run(flow_run_id).state
            return now is not None and now.is_final()

        going = [flow_run_id for flow_run_id in ids.values() if not final(flow_run_id)]
        for flow_run_id in going:
            now = client.read_flow_run(flow_run_id).state
            # A run that has not started yet has no process to stop: it is cancelled outright.
            kind = StateType.CANCELLING if now is not None and now.is_running() else StateType.CANCELLED
            client.set_flow_run_state(flow_run_id, State(type=kind), force=True)

        def stopped() -> bool:
            return all(final(flow_run_id) for flow_run_id in going)

        with contextlib.suppress(AssertionError):
            wait_for(stopped, timeout=30, interval=0.5, what="the runs left going to stop")


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
    # What `prefect flow-run cancel` does, without starting a Python for it.
    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING))
    assert result.status == SetStateStatus.ACCEPT, result.details


@pytest.mark.parametrize("status", list(STARTED))
def test_the_prefect_ui_shows_progress_metrics_plots_and_links(
    browser: Browser, served: Path, flow_runs: dict[str, Any], status: str, tmp_path: Path
) -> None:
    ui = os.environ["PREFECT_UI_URL"].rstrip("/") + "/v2"
    flow_run_id = flow_runs[status]
    if status == "INTERRUPTED":
        _cancel_when_live(flow_run_id)
    summary = _summary(flow_run_id)
    run_id = summary.key.removeprefix("experiment-run-")
    assert summary.description.startswith(f"experiment run {run_id}: {status}")
    name = status.lower()
    shots = tmp_path / "shots"
    shots.mkdir()

    progress_card = "3/3 (100%)" if status == "COMPLETED" else "/1000 ("
    page = browser.render(
        f"{ui}/runs/flow-run/{flow_run_id}?tab=Artifacts",
        shots / f"{name}-flow-run.png",
        until=_shows(
            f"sacred-id:{run_id}",
            f"experiment-run-{run_id}-metrics",
            f"experiment run {run_id}: {status}",
            f"FileStorageObserver: {served / run_id}",
            "training.loss",
            *([progress_card] if status != "FAILED" else []),
        ),
    )
    assert f"sacred-id:{run_id}" in page  # the tag, beside the run's name
    assert f"experiment-run-{run_id}" in page and f"experiment-run-{run_id}-metrics" in page
    assert f"FileStorageObserver: {served / run_id}" in page  # the link's card
    assert f"experiment run {run_id}: {status}" in page
    assert "training.loss" in page  # the metrics card says the latest, min and max
    if status != "FAILED":
        assert "/1000 (" in page or "3/3 (100%)" in page  # the progress card

    plot = 'src="data:image/svg+xml;base64,'
    page = browser.render(
        f"{ui}/artifacts/artifact/{summary.id}",
        shots / f"{name}-summary.png",
        until=_shows(f"experiment run {run_id}: {status}", plot, "training.loss", "Stored by"),
        height=2000,
    )
    assert f"experiment run {run_id}: {status}" in page
    assert plot in page  # the plot, rendered as an image
    assert "training.loss" in page and "Stored by" in page
    if status == "FAILED":
        assert "FloatingPointError" in page

    table = next(a for a in _artifacts(flow_run_id) if a.type == "table")
    page = browser.render(
        f"{ui}/artifacts/artifact/{table.id}",
        shots / f"{name}-metrics.png",
        until=_shows("training.loss", "latest", "max"),
        height=700,
    )
    assert "training.loss" in page and "latest" in page and "max" in page

    if status == "INTERRUPTED":
        progress = next(a for a in _artifacts(flow_run_id) if a.type == "progress")
        page = browser.render(
            f"{ui}/artifacts/artifact/{progress.id}",
            shots / f"{name}-progress.png",
            until=lambda page: re.search(r"Progress: [\d.]+%", page) is not None,
            height=600,
        )
        assert re.search(r"Progress: [\d.]+%", page)
        page = browser.render(
            f"{ui}/artifacts",
            shots / "artifacts-page.png",
            until=_shows(f"experiment-run-{run_id}"),
            height=900,
        )
        assert f"experiment-run-{run_id}" in page

    _keep(*shots.iterdir())


def test_the_deployment_form_describes_each_parameter_and_takes_an_optional_seed(
    browser: Browser, served: Path, tmp_path: Path
) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("experiment/train")
    ui = os.environ["PREFECT_UI_URL"].rstrip("/") + "/v2"
    shot = tmp_path / "deployment-form.png"
    page = browser.render(
        f"{ui}/deployments/deployment/{deployment.id}/run",
        shot,
        until=_shows("passes of gradient descent over the data", "the random seed for this experiment"),
        height=1300,
    )
    assert "passes of gradient descent over the data" in page  # the config comment
    assert "seed (Optional)" in page and "the random seed for this experiment" in page
    assert "Property is type None" not in page
    _keep(shot)


_SUBMIT = """Array.from(document.querySelectorAll('button'))
    .find((button) => button.textContent.trim() === 'Submit').click()"""


def test_the_run_form_submits_with_its_defaults_and_the_run_draws_a_seed(
    browser: Browser, served: Path, tmp_path: Path
) -> None:
    """The UI checks the form against the deployment's schema before it submits: an optional
    seed whose default is None must be accepted as it is (it was refused, under ``seed``)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("experiment/train")
    only_ours = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

    def flow_runs() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(client.read_flow_runs(deployment_filter=only_ours))

    before = {run.id for run in flow_runs()}
    ui = os.environ["PREFECT_UI_URL"].rstrip("/") + "/v2"
    shot = tmp_path / "deployment-form-submitted.png"
    page = browser.render(
        f"{ui}/deployments/deployment/{deployment.id}/run",
        shot,
        until=_shows("the random seed for this experiment", "Submit"),
        then=(_SUBMIT, lambda page: "is not of type" in page or any(r.id not in before for r in flow_runs())),
    )
    assert "is not of type" not in page, re.findall(r"[^<>]*is not of type[^<>]*", page)
    [submitted] = [run for run in flow_runs() if run.id not in before]
    assert submitted.parameters["epochs"] == 10  # the form's default
    finished = wait_for(
        lambda: (run := next(r for r in flow_runs() if r.id == submitted.id)).state.is_final() and run,
        timeout=180,
        what="the submitted run to end",
    )
    assert finished.state.type == StateType.COMPLETED, finished.state
    # Submitted without one, the run drew its seed (the watcher fixes it as the run is queued).
    assert isinstance(finished.parameters["seed"], int)
