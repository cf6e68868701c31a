"""Sweeps on another task runner (Dask, Ray): the experiment their trials run, the sweep in all
eight contract backends, and reading back FileStorage runs and the parent's summary artifact."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment
from tests.backends import Backend, every

#: The learning rates of the eight-trial sweep.
EIGHT_LRS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def worker_experiment(name: str) -> Experiment:
    """The experiment whose trials run on a task runner's workers.

    A trial logs ``loss`` = lr * (step + 1) for steps 0-2 and prints ``"<name> lr=.. step=.."``,
    puts its pid in ``info`` and returns lr * 2; ``fail`` raises then, and ``die_after`` > 0
    kills its worker process that many seconds later (only on the first attempt when
    ``die_once`` names a marker file).
    """
    ex = Experiment(name)
    ex.beat_interval = 0.5

    @ex.config
    def cfg() -> None:
        lr = 0.01  # noqa: F841
        fail = False  # raise once the points are logged  # noqa: F841
        die_after = 0.0  # seconds; > 0: the trial's worker process kills itself then  # noqa: F841
        die_once = ""  # a marker file: die only if it is missing (the first attempt)  # noqa: F841

    @ex.main
    def train(lr: float, fail: bool, die_after: float, die_once: str, _run: Any) -> float:
        _run.info["pid"] = os.getpid()
        for step in range(3):
            _run.log_scalar("loss", lr * (step + 1), step)
            print(f"{name} lr={lr} step={step}")
        if fail:
            raise ValueError(f"diverged at lr={lr}")
        if die_after > 0 and not (die_once and os.path.exists(die_once)):
            if die_once:
                Path(die_once).touch()
            time.sleep(die_after)  # the journal takes the output and points every second
            os.kill(os.getpid(), signal.SIGKILL)
        return lr * 2

    return ex


def assert_eight_trials_in_workers(ex: Experiment, every_backend: list[Backend], task_runner: Any) -> None:
    """One sweep whose observers list all eight contract backends: every backend holds the
    eight trials apart, recorded in the workers, and the parent's summary lists them."""
    from prefect import flow

    fresh = every.Fresh(every_backend)
    ex.observers[:] = fresh.observers
    task = ex.task()

    @flow(task_runner=task_runner)
    def sweep() -> list[float]:
        return [future.result() for future in task.map(lr=EIGHT_LRS)]

    try:
        state = sweep(return_state=True)
    finally:
        ex.observers.clear()
    assert sorted(state.result()) == pytest.approx([lr * 2 for lr in EIGHT_LRS])
    summary = sweep_summary(state.state_details.flow_run_id)
    assert "8 trials (8 COMPLETED)" in summary
    assert "lr=0.7" in summary and "loss=2.1" in summary  # published by the workers' trials
    every.assert_trials_apart(
        fresh,
        EIGHT_LRS,
        ex.name,
        lambda lr, step: f"{ex.name} lr={lr} step={step}",
        parent_pid=os.getpid(),  # recorded by the observers in the workers
    )


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
