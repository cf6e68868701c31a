"""Trials of a sweep on Ray's worker processes (prefect-ray's RayTaskRunner, a local Ray).

One local Ray for the module (10-15 s to start, ~0.8-1 GB of RAM: its own GCS, raylet, agents
and two workers). The observers travel to the workers by pickling and record the trials there
(the eight-trial sweep in all eight contract backends at once).
A worker killed mid-trial leaves its trial to the parent flow's hook, which finishes it from the
trial's journal; one Ray reruns (its default) ends the dead attempt's record itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
    import ray
    from prefect_ray import RayTaskRunner
    from prefect_ray.context import remote_options
except ImportError:  # pragma: no cover - the dev lock installs it
    ray = None

ex = worker_experiment("ray_trial")


@pytest.fixture(scope="module")
def local_ray(every_backend: list[Backend]) -> Iterator[None]:
    # The backends first: the workers take the environment (S3's credentials) when they start.
    if ray is None:
        service_missing("prefect-ray is not installed (pip install prefect-sacred[ray])")
    # A short temp dir: Ray's unix sockets live under it (108-byte path limit).
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    usage_stats = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as DO_NOT_TRACK for Prefect
    try:
        # The workers inherit this process's environment: the session's Prefect server and
        # journal directory. RayTaskRunner uses an initialised Ray and leaves it running.
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 * 1024 * 1024,
            log_to_driver=False,
            _temp_dir=temp_dir,
            _node_ip_address="127.0.0.1",
        )
        yield
    finally:
        ray.shutdown()
        if usage_stats is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_eight_trials_in_ray_workers(every_backend: list[Backend], local_ray: None) -> None:
    assert_eight_trials_in_workers(ex, every_backend, RayTaskRunner())


def test_failing_killed_and_rerun_trials(local_ray: None, tmp_path: Path) -> None:
    """A trial raising; a worker killed mid-trial (not rerun: the parent's hook ends it); one
    killed and rerun by Ray (the default): the rerun ends the dead attempt's record."""
    from prefect import flow
    from prefect.futures import wait

    ex.observers[:] = [FileStorageObserver(tmp_path)]
    task = ex.task()

    @flow(task_runner=RayTaskRunner())
    def sweep() -> list[float]:
        with remote_options(max_retries=0):  # Ray reruns a task whose worker died, 3 times by default
            killed = task.submit(lr=0.3, die_after=1.5)
        rerun = task.submit(lr=0.4, die_after=1.5, die_once=str(tmp_path / "died"))
        futures = [killed, rerun, *task.map(lr=[0.1, 0.2], fail=[False, True])]
        wait(futures)
        return [future.result() for future in futures]  # the killed trial's error fails the flow

    try:
        state = sweep(return_state=True)
    finally:
        ex.observers.clear()
    assert state.is_failed()
    assert "4 trials (2 COMPLETED, 2 FAILED)" in sweep_summary(state.state_details.flow_run_id)
    runs: dict[float, list[dict[str, Any]]] = {}
    for run in file_runs(tmp_path).values():
        runs.setdefault(run["config"]["lr"], []).append(run)
    assert [run["run"]["status"] for run in runs[0.1]] == ["COMPLETED"]
    [failed] = runs[0.2]
    assert failed["run"]["status"] == "FAILED"
    assert "ValueError: diverged at lr=0.2" in "".join(failed["run"]["fail_trace"])
    [killed] = runs[0.3]
    assert killed["run"]["status"] == "FAILED", killed["run"]
    trace = "".join(killed["run"]["fail_trace"])
    assert "process died" in trace and "WorkerCrashedError" in trace, trace
    # What the journal held when the worker died reached the record.
    assert "ray_trial lr=0.3 step=2" in killed["cout"]
    assert killed["metrics"]["loss"]["values"] == pytest.approx([0.3, 0.6, 0.9])
    # The same task run twice: two records, the dead attempt's ended by the rerun.
    dead, again = sorted(runs[0.4], key=lambda run: run["run"]["start_time"])
    task_run_id = dead["run"]["meta"]["prefect"]["task_run_id"]
    assert again["run"]["meta"]["prefect"]["task_run_id"] == task_run_id
    assert (dead["run"]["status"], again["run"]["status"]) == ("FAILED", "COMPLETED")
    dead_trace = "".join(dead["run"]["fail_trace"])
    assert "process died" in dead_trace and "ran task run" in dead_trace, dead_trace
    assert dead["info"]["pid"] != again["info"]["pid"]
    assert dead["metrics"]["loss"]["values"] == pytest.approx([0.4, 0.8, 1.2])
