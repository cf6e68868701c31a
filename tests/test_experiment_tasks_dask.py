"""Trials of a sweep on Dask's worker processes (prefect-dask's DaskTaskRunner, a LocalCluster).

One cluster for the module. The observers travel to the workers by pickling and record the
trials there (the eight-trial sweep in all eight contract backends at once); a worker killed
mid-trial leaves its trial to the parent flow's hook, which finishes it from the trial's journal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import FileStorageObserver
from tests.backends import Backend
from tests.support import service_missing
from tests.sweeps import assert_eight_trials_in_workers, file_runs, sweep_summary, worker_experiment

pytestmark = pytest.mark.slow

try:
    import distributed
    from prefect_dask import DaskTaskRunner
except ImportError:  # pragma: no cover - the dev lock installs it
    distributed = None

ex = worker_experiment("dask_trial")


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
    assert_eight_trials_in_workers(ex, every_backend, DaskTaskRunner(address=cluster.scheduler_address))


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
    assert "dask_trial lr=0.2 step=2" in killed["cout"]
    assert killed["metrics"]["loss"]["values"] == pytest.approx([0.2, 0.4, 0.6])
