"""What a run shows in the Prefect UI, read back from the session's real Prefect server.

Every way a run ends in its own process (completed, failed, interrupted, failing to start) and
the live updates of a running run; tests/test_prefect_ui_served.py covers the ends recorded by
the serve process (cancel, SIGKILL), tests/test_prefect_ui_browser.py the rendered pages.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from prefect_sacred import Experiment, FileStorageObserver, Run
from prefect_sacred.observers.prefect_ui import PrefectArtifactsObserver
from prefect_sacred.testing import FailingObserver
from tests.support import free_port, wait_for

ex = Experiment("UI test")  # upper case and a space: keys are slugs


@ex.main
def ui_main(
    epochs: int = 4, fail: bool = False, interrupt: bool = False, _run: Any = None
) -> dict[str, float]:
    _run.info["progress"] = {"total": epochs}
    loss = 0.0
    for epoch in range(epochs):
        loss = 1.0 / (epoch + 1)
        _run.log_scalar("training.loss", loss, epoch)
        _run.log_scalar("accuracy", epoch / epochs, epoch)
    if fail:
        raise ValueError("bad batch in epoch 3")
    if interrupt:
        raise KeyboardInterrupt
    return {"loss": loss}


def _artifacts(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]))
        )


def _by_key(artifacts: list[Any], key: str) -> Any:
    found = [artifact for artifact in artifacts if artifact.key == key]
    assert len(found) == 1, [(a.key, a.type) for a in artifacts]
    return found[0]


def _run_and_read(tmp_path: Path, **config: Any) -> tuple[Run, list[Any]]:
    ex.observers[:] = [FileStorageObserver(tmp_path / "runs")]
    try:
        run = ex.run(config)
    except BaseException:
        run = ex.last_run  # type: ignore[assignment]
    assert run is not None
    return run, _artifacts(run.meta_info["prefect"]["flow_run_id"])


def test_a_completed_run_has_its_summary_metrics_progress_and_links(tmp_path: Path) -> None:
    run, artifacts = _run_and_read(tmp_path, epochs=4)
    key = f"ui-test-run-{run._id}"

    summary = _by_key(artifacts, key)
    assert summary.type == "markdown"
    assert summary.description.startswith(f"UI test run {run._id}: COMPLETED")
    assert f"# UI test run {run._id}: COMPLETED" in summary.data
    assert re.search(r"\*\*Duration\*\* \| \d+\.\d s", summary.data)
    assert '"epochs": 4' in summary.data and '"loss": 0.25' in summary.data
    assert f"FileStorageObserver: `{tmp_path / 'runs' / str(run._id)}`" in summary.data
    # One plot per metric, an SVG the UI renders inside the markdown.
    images = re.findall(r"!\[([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", summary.data)
    assert sorted(name for name, _ in images) == ["accuracy", "training.loss"]
    svg = base64.b64decode(images[1][1]).decode()
    assert svg.startswith("<svg") and "<polyline" in svg and "training.loss" in svg

    table = _by_key(artifacts, f"{key}-metrics")
    assert table.type == "table"
    rows = {row["metric"]: row for row in table.data}
    assert rows["training.loss"] | {"trend": None} == {
        "metric": "training.loss",
        "latest": 0.25,
        "step": 3,
        "min": 0.25,
        "max": 1.0,
        "points": 4,
        "trend": None,
    }
    assert rows["accuracy"]["max"] == 0.75

    [progress] = [artifact for artifact in artifacts if artifact.type == "progress"]
    assert float(progress.data) == 100.0
    assert "4/4" in progress.description

    [link] = [a for a in artifacts if a.type == "markdown" and a.key is None]
    run_dir = tmp_path / "runs" / str(run._id)
    assert link.data == f"[{run_dir}](file://{run_dir})"
    assert link.description == f"FileStorageObserver: {run_dir}"

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(run.meta_info["prefect"]["flow_run_id"]))
    assert f"sacred-id:{run._id}" in flow_run.tags
    assert flow_run.labels["prefect-sacred.run-id"] == str(run._id)


def test_a_failed_run_shows_its_error_and_its_metrics(tmp_path: Path) -> None:
    run, artifacts = _run_and_read(tmp_path, epochs=3, fail=True)
    assert run.status == "FAILED"
    summary = _by_key(artifacts, f"ui-test-run-{run._id}")
    assert summary.description.startswith(f"UI test run {run._id}: FAILED")
    assert "## Error" in summary.data and "ValueError: bad batch in epoch 3" in summary.data
    table = _by_key(artifacts, f"ui-test-run-{run._id}-metrics")
    assert {row["metric"]: row["points"] for row in table.data} == {"accuracy": 3, "training.loss": 3}


def test_an_interrupted_run_is_summarised_as_interrupted(tmp_path: Path) -> None:
    run, artifacts = _run_and_read(tmp_path, epochs=2, interrupt=True)
    assert run.status == "INTERRUPTED"
    summary = _by_key(artifacts, f"ui-test-run-{run._id}")
    assert f"# UI test run {run._id}: INTERRUPTED" in summary.data


def test_each_run_has_keys_of_its_own(tmp_path: Path) -> None:
    first, first_artifacts = _run_and_read(tmp_path, epochs=1)
    second, second_artifacts = _run_and_read(tmp_path, epochs=1)
    assert first._id != second._id
    assert {a.key for a in first_artifacts if a.key} == {
        f"ui-test-run-{first._id}",
        f"ui-test-run-{first._id}-metrics",
    }
    assert {a.key for a in second_artifacts if a.key} == {
        f"ui-test-run-{second._id}",
        f"ui-test-run-{second._id}-metrics",
    }


def test_an_unobserved_run_publishes_nothing(tmp_path: Path) -> None:
    ex.observers[:] = [FileStorageObserver(tmp_path / "runs")]
    run = ex.run({"epochs": 1}, {"--unobserved": True})
    assert not any(isinstance(observer, PrefectArtifactsObserver) for observer in run.observers)
    assert _artifacts(run.meta_info["prefect"]["flow_run_id"]) == []


def test_an_observer_failing_at_start_gives_one_error_line_and_no_run_none_artifact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="prefect_sacred")
    ex.observers[:] = [FileStorageObserver(tmp_path / "runs"), FailingObserver(events={"started_event"})]
    with pytest.raises(Exception, match="observer FailingObserver failed to start the run"):
        ex.run({"epochs": 1})
    run = ex.last_run
    assert run is not None
    flow_run_id = UUID(run.meta_info["prefect"]["flow_run_id"])
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()

    def logs() -> list[Any] | None:
        with get_client(sync_client=True) as client:
            found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return found if any("Finished in state" in log.message for log in found) else None

    found = wait_for(logs, timeout=20, what="the flow run's logs")
    errors = [log.message for log in found if log.level >= 40]
    assert len(errors) == 1, errors
    assert "FailingObserver" in errors[0] and "Traceback" not in errors[0]
    assert all("None" not in (a.key or "") + (a.description or "") for a in _artifacts(flow_run_id))
    [debug] = [r for r in caplog.records if r.getMessage() == "traceback of the FailingObserver failure"]
    assert debug.levelno == logging.DEBUG and debug.exc_info is not None


PROGRESS = {"progress": {"total": 4}}


def _flow_run_id() -> UUID:
    from prefect import flow

    @flow(name="ui-direct")
    def direct() -> None:
        pass

    with get_client(sync_client=True) as client:
        return client.create_flow_run(direct).id


def test_each_beat_costs_at_most_one_api_call_and_the_artifacts_follow_the_run() -> None:
    flow_run_id = _flow_run_id()
    observer = PrefectArtifactsObserver(min_interval=0)
    start = dt.datetime(2026, 12, 1, 10, 0, 0)
    observer.started_event(
        ex_info={"name": "live"},
        command="main",
        host_info={},
        start_time=start,
        config={"epochs": 4},
        meta_info={"prefect": {"flow_run_id": str(flow_run_id), "flow_run_name": "live-run"}},
        _id=7,
    )
    assert observer.calls == 0  # the run's start never waits for Prefect
    for beat in range(4):
        observer.log_metrics(
            {"loss": {"steps": [beat], "values": [10.0 - beat], "timestamps": [start], "name": "loss"}}, {}
        )
        observer.heartbeat_event(info=PROGRESS, captured_out="", beat_time=start, result=None)
        assert observer.calls == beat + 1
    artifacts = _artifacts(flow_run_id)
    table = _by_key(artifacts, "live-run-7-metrics")
    assert table.data[0]["latest"] == 8.0 and table.data[0]["max"] == 10.0  # updated at beat 3
    [progress] = [artifact for artifact in artifacts if artifact.type == "progress"]
    assert float(progress.data) == 100.0  # updated at beat 4

    # The next beat catches up with the table (point 4); one with nothing new costs nothing.
    for _ in range(2):
        observer.heartbeat_event(info=PROGRESS, captured_out="", beat_time=start, result=None)
    assert observer.calls == 5
    assert _by_key(_artifacts(flow_run_id), "live-run-7-metrics").data[0]["latest"] == 7.0
    calls_before_end = observer.calls

    observer.completed_event(stop_time=start + dt.timedelta(seconds=75), result=3.5)
    summary = _by_key(_artifacts(flow_run_id), "live-run-7")
    assert "| **Duration** | 1 min 15 s |" in summary.data
    # The end: final table, summary (nothing for the progress, already complete).
    assert observer.calls - calls_before_end == 2


def test_prefect_being_away_during_the_run_costs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    observer = PrefectArtifactsObserver(min_interval=0, timeout=2)
    start = dt.datetime(2026, 12, 1, 10, 0, 0)
    observer.started_event(
        ex_info={"name": "away"},
        command="main",
        host_info={},
        start_time=start,
        config={},
        meta_info={"prefect": {"flow_run_id": str(UUID(int=0)), "flow_run_name": "away"}},
        _id=1,
    )
    began = time.monotonic()
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):  # nobody there
        for beat in range(3):
            observer.log_metrics({"loss": {"steps": [beat], "values": [1.0], "timestamps": [start]}}, {})
            observer.heartbeat_event(info={}, captured_out="", beat_time=start, result=None)
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "Prefect UI" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        with pytest.raises(RuntimeError, match="not published"):  # the end raises, so it is retried
            observer.completed_event(stop_time=start, result=None)
    assert time.monotonic() - began < 30
