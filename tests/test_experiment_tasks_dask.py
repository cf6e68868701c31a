"""Trials of a sweep on Dask's worker processes (prefect-dask's DaskTaskRunner, a LocalCluster).

One cluster for the module. The observers travel to the workers by pickling and record the
trials there (the eight-trial sweep in all eight contract backends at once); a worker killed
mid-trial leaves its trial to the parent flow's hook, which finishes it from the trial's journal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment, FileStorageObserver
from tests.backends import Backend, every
from tests.support import service_missing
from tests.sweeps import file_runs, sweep_summary

pytestmark = pytest.mark.slow

try:
    import distributed
    from prefect_dask import DaskTaskRunner
except ImportError:  # pragma: no cover - the dev lock installs it
    distributed = None

ex = Experiment("dask_trial")
ex.beat_interval = 0.5


@ex.config
def cfg() -> None:
    lr = 0.01  # noqa: F841
    die_after = 0.0  # seconds; > 0: the trial's worker process kills itself then  # noqa: F841


@ex.main
def train(lr: float, die_after: float, _run: Any) -> float:
    _run.info["pid"] = os.getpid()
    for step in range(3):
        _run.log_scalar("loss", lr * (step + 1), step)
        print(f"dask trial lr={lr} step={step}")
    if die_after > 0:
        time.sleep(die_after)  # the journal takes the output and points every second
        os.kill(os.getpid(), signal.SIGKILL)
    return lr * 2


@pytest.fixture(scope="module")
def cluster(every_backend: list[Backend]) -> Iterator[Any]:
    # The backends first: the workers take the environment (S3's credentials) when they start.
    if distributed is None:
        service_missing("prefect-dask is not installed (pip install prefect-sacred[dask])")
    import dask

    # A killed worker fails its task at once instead of retrying it on another worker.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        )
        try:
            yield local
        finally:
            local.close()


def test_eight_trials_in_dask_workers(every_backend: list[Backend], cluster: Any) -> None:
    """One sweep whose observers list all eight contract backends: every backend holds the
    eight trials apart, recorded in the workers."""
    from prefect import flow

    fresh = every.Fresh(every_backend)
    ex.observers[:] = fresh.observers
    task = ex.task()
    lrs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def sweep() -> list[float]:
        return [future.result() for future in task.map(lr=lrs)]

    try:
        state = sweep(return_state=True)
    finally:
        ex.observers.clear()
    assert sorted(state.result()) == pytest.approx([lr * 2 for lr in lrs])
    summary = sweep_summary(state.state_details.flow_run_id)
    assert "8 trials (8 COMPLETED)" in summary
    assert "lr=0.7" in summary and "loss=2.1" in summary  # published by the workers' trials
    every.assert_trials_apart(
        fresh,
        lrs,
        "dask_trial",
        lambda lr, step: f"dask trial lr={lr} step={step}",
        parent_pid=os.getpid(),  # recorded by the observers in the workers
    )


@pytest.mark.parametrize("options", [{}, {"task_run_name": "lr-{lr}"}], ids=["default-names", "own-names"])
def test_a_killed_worker_fails_its_trial(cluster: Any, tmp_path: Path, options: dict[str, Any]) -> None:
    """Also when the trials' task runs have names of their own: the parent knows them by task."""
    from prefect import flow

    ex.observers[:] = [FileStorageObserver(tmp_path)]
    task = ex.task(**options)

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def sweep() -> list[float]:
        return [future.result() for future in task.map(lr=[0.1, 0.2], die_after=[0.0, 1.5])]

    try:
        state = sweep(return_state=True)
    finally:
        ex.observers.clear()
    assert state.is_failed()
    summary = sweep_summary(state.state_details.flow_run_id)
    assert "2 trials (1 COMPLETED, 1 FAILED)" in summary
    [killed_row] = [line for line in summary.splitlines() if "| FAILED |" in line]
    assert "loss=0.6" in killed_row  # its last metric, from its journal
    runs = {run["config"]["lr"]: run for run in file_runs(tmp_path).values()}
    assert runs[0.1]["run"]["status"] == "COMPLETED"
    killed = runs[0.2]
    assert killed["run"]["status"] == "FAILED", killed["run"]
    trace = "".join(killed["run"]["fail_trace"])
    assert "process died" in trace and "KilledWorker" in trace, trace
    # What the journal held when the worker died reached the record.
    assert "dask trial lr=0.2 step=2" in killed["cout"]
    assert killed["metrics"]["loss"]["values"] == pytest.approx([0.2, 0.4, 0.6])
