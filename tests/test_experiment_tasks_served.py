"""Ends of trials and their output beyond the plain sweep.

- A user's own served sweep cancelled from Prefect: its live trials end INTERRUPTED, though the
  flow names no hook of ours (the flow-run process ends them as soon as Prefect says
  Cancelling, before the runner's SIGTERM). Real ``flow.serve`` process, real cancellation.
- A trial over its ``timeout_seconds``: TIMEOUT, the other trials untouched.
- ``capture="fd"``: a trial's C-level and subprocess output, and what two overlapping fd trials get.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_sacred import Experiment
from prefect_sacred.testing import InMemoryObserver
from tests.support import REPO, serving, subprocess_env, wait_for

LRS = [0.1, 0.2, 0.3]

ex = Experiment("trial_ends")
ex.beat_interval = 0.2
#: Overlapping fd trials meet here: both have started (and chosen their capture) before either
#: writes, and neither ends before both wrote.
meeting = threading.Barrier(2, timeout=20)


@ex.config
def cfg() -> None:
    name = "a"  # noqa: F841
    steps = 3  # noqa: F841
    meet = False  # noqa: F841


@ex.main
def trial(name: str, steps: int, meet: bool, _run: Any) -> int:
    if meet:
        meeting.wait()
    for step in range(steps):
        _run.log_scalar("loss", step, step)
        print(f"trial {name} step {step}", flush=True)
        time.sleep(0.05)
    os.write(1, f"trial {name} C-level write\n".encode())
    subprocess.run(["echo", f"trial {name} subprocess echo"], check=True, timeout=10)
    if meet:
        meeting.wait()
    return steps


def _sweep(task: Any, **mapped: list[Any]) -> Any:
    runner: Any = ThreadPoolTaskRunner(max_workers=4)

    @flow(task_runner=runner)
    def sweep() -> list[Any]:
        return [future.wait() or future.state for future in task.map(**mapped)]

    return sweep


@pytest.fixture
def memory() -> Iterator[InMemoryObserver]:
    observer = InMemoryObserver()
    ex.observers[:] = [observer]
    meeting.reset()
    yield observer
    ex.observers.clear()
    meeting.abort()


def _by_name(memory: InMemoryObserver) -> dict[str, dict[str, Any]]:
    return {run["config"]["name"]: run for run in memory.runs}


def test_a_trial_over_its_timeout_ends_timeout_and_the_others_complete(memory: InMemoryObserver) -> None:
    task = ex.task(timeout_seconds=1)
    state = _sweep(task, name=["slow", "quick"], steps=[200, 3])(return_state=True)
    assert state.is_failed()

    runs = _by_name(memory)
    slow, quick = runs["slow"], runs["quick"]
    # Sacred's status for a run stopped by a time limit, as for a flow's timeout_seconds.
    assert slow["status"] == "TIMEOUT"
    interrupted = [kwargs["status"] for event, kwargs in memory.events if event == "interrupted_event"]
    assert interrupted == ["TIMEOUT"]
    assert "failed_event" not in [event for event, _ in memory.events]  # one end only
    points = slow["metrics"]["loss"]["values"]
    assert 1 <= len(points) < 200  # its points up to the timeout, and not beyond
    steps = [line for line in slow["captured_out"].splitlines() if line.startswith("trial slow step")]
    assert len(points) - 1 <= len(steps) <= len(points)  # and its output, up to the same step
    assert quick["status"] == "COMPLETED" and quick["result"] == 3
    assert quick["metrics"]["loss"]["values"] == [0, 1, 2]
    assert "slow" not in quick["captured_out"]


def test_fd_capture_takes_c_level_and_subprocess_output(memory: InMemoryObserver) -> None:
    task = ex.task(capture="fd")
    state = _sweep(task, name=["solo"])(return_state=True)
    assert state.is_completed()
    out = _by_name(memory)["solo"]["captured_out"]
    assert "trial solo step 2" in out
    assert "trial solo C-level write" in out
    assert "trial solo subprocess echo" in out


def test_overlapping_fd_trials_the_second_falls_back_to_sys(
    memory: InMemoryObserver, caplog: pytest.LogCaptureFixture
) -> None:
    task = ex.task(capture="fd")
    state = _sweep(task, name=["left", "right"], meet=[True, True])(return_state=True)
    assert state.is_completed()
    runs = _by_name(memory)
    holder = next(name for name, run in runs.items() if f"trial {name} C-level write" in run["captured_out"])
    other = "right" if holder == "left" else "left"
    held, fell_back = runs[holder]["captured_out"], runs[other]["captured_out"]
    assert "using capture mode 'sys'" in caplog.text
    # The fallback (sys) gets its own Python-level output and nothing of the other trial's...
    assert f"trial {other} step 2" in fell_back
    assert holder not in fell_back
    # ...but not its C-level or subprocess output: fds 1 and 2 are the process's, held by the
    # first fd trial, which records that output instead.
    assert f"trial {other} C-level write" not in fell_back
    assert f"trial {other} subprocess echo" not in fell_back
    assert f"trial {other} C-level write" in held and f"trial {other} subprocess echo" in held
    assert f"trial {holder} subprocess echo" in held


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A served deployment of tests/data/sweep_served.py; yields its name."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    events = tmp_path / "events.log"
    events.touch()
    monkeypatch.setenv("EVENT_LOG", str(events))  # for the hook this test calls itself
    env = subprocess_env(
        PREFECT_SACRED_OBSERVERS="file://./runs", EVENT_LOG=str(events), PREFECT_RUNNER_POLL_FREQUENCY=1
    )
    script = REPO / "tests" / "data" / "sweep_served.py"
    with serving(script, name, f"served-sweep/{name}", tmp_path, env) as deployment:
        yield deployment


def _records(runs: Path) -> dict[float, dict[str, Any]]:
    """The trials' run.json by lr (those started)."""
    found = {}
    for path in runs.glob("*/run.json"):
        record = json.loads(path.read_text())
        record["dir"] = path.parent
        found[json.loads((path.parent / "config.json").read_text())["lr"]] = record
    return found


def _artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        )


def _lines(events: Path, name: str) -> list[str]:
    return [line for line in events.read_text().splitlines() if line.startswith(name)]


@pytest.mark.slow
def test_a_served_sweep_cancelled_from_prefect_ends_its_trials_interrupted(
    served: str, tmp_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    runs, events = tmp_path / "runs", tmp_path / "events.log"
    flow_run: Any = run_deployment(served, parameters={"lrs": LRS}, timeout=0)

    def all_running_with_points() -> bool:
        records = _records(runs)
        return len(records) == len(LRS) and all(
            (record["dir"] / "metrics.json").exists()
            and len(json.loads((record["dir"] / "metrics.json").read_text())["loss"]["values"]) >= 3
            for record in records.values()
        )

    wait_for(all_running_with_points, timeout=90, interval=0.3, what="three live trials with points")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

    def ended() -> bool:  # in both observers: each has its own delivery worker
        return all(record["status"] != "RUNNING" for record in _records(runs).values()) and len(
            _lines(events, "interrupted_event")
        ) >= len(LRS)

    wait_for(ended, timeout=60, interval=0.3, what="the trials' ends")
    records = _records(runs)
    assert sorted(records) == LRS
    for lr, record in records.items():
        assert record["status"] == "INTERRUPTED", record
        assert record["meta"]["sweep"]["flow_run_id"] == str(flow_run.id)
        losses = json.loads((record["dir"] / "metrics.json").read_text())["loss"]["values"]
        assert len(losses) >= 3 and losses[:3] == pytest.approx([0.0, lr, 2 * lr])
        output = (record["dir"] / "cout.txt").read_text()
        assert f"served trial lr={lr} step=2" in output
        steps = [line for line in output.splitlines() if line.startswith("served trial")]
        assert len(steps) >= len(losses) - 1  # the output up to the cancel, as the points
    interrupted = _lines(events, "interrupted_event")
    assert len(interrupted) == len(LRS) and all(line.endswith("INTERRUPTED") for line in interrupted)
    assert _lines(events, "completed_event") == [] and _lines(events, "failed_event") == []

    # Those who named the hook (@flow(on_cancellation=[train.sweep_hook])) get it run in the
    # serve process after the kill: it finds the trials ended (no journal left to end) and ends
    # none of them again.
    from prefect_sacred.core.journal import RunJournal
    from tests.data import sweep_served

    with get_client(sync_client=True) as client:
        parent = wait_for(
            lambda: (fr := client.read_flow_run(flow_run.id)).state.is_cancelled() and fr,  # type: ignore[union-attr]
            timeout=60,
            interval=0.5,
            what="the flow run Cancelled",
        )
    assert all(RunJournal.find(r["meta"]["prefect"]["task_run_id"]) is None for r in records.values())
    # The trials' process wrote the summary (the flow's own hook never runs: the runner owns
    # cancellation).
    summaries = [a.data for a in _artifacts(flow_run.id) if a.key == "sweep-served-sweep"]
    assert len(summaries) == 1 and "3 trials (3 INTERRUPTED)" in summaries[0], summaries
    sweep_served.train_task.sweep_hook(flow=sweep_served.sweep, flow_run=parent, state=Cancelling())
    assert len(_lines(events, "interrupted_event")) == len(LRS)
    assert {record["status"] for record in _records(runs).values()} == {"INTERRUPTED"}
    # Its summary lists the trials INTERRUPTED too (from the rows their process published).
    summaries = [a.data for a in _artifacts(flow_run.id) if a.key == "sweep-served-sweep"]
    assert len(summaries) == 2
    assert all("3 trials (3 INTERRUPTED)" in summary for summary in summaries), summaries
