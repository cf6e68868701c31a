"""Experiments as Prefect tasks: each trial of a sweep is one observed run (thread pool)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_sacred import Experiment, current_run
from prefect_sacred.testing import InMemoryObserver
from tests.backends import Backend, BackendUnavailable, load_backends
from tests.support import service_missing

LRS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]

ex = Experiment("sweep_trial")
ex.beat_interval = 0.2


@ex.config
def cfg() -> None:
    lr = 0.01  # learning rate
    epochs = 3  # noqa: F841
    scaled = lr * 100  # follows lr  # noqa: F841


#: Attempts per lr, so a trial can fail its first attempt only.
attempts: dict[float, int] = {}
attempts_lock = threading.Lock()
flaky_lrs: set[float] = set()
broken_lrs: set[float] = set()
gate = threading.Event()
blocked_lrs: set[float] = set()


@ex.main
def train(lr: float, epochs: int, scaled: float, _run: Any) -> float:
    with attempts_lock:
        attempts[lr] = attempts.get(lr, 0) + 1
        attempt = attempts[lr]
    assert current_run() is _run
    for epoch in range(epochs):
        _run.log_scalar("loss", lr * (epoch + 1), epoch)
        print(f"trial lr={lr} epoch={epoch}")
        time.sleep(0.03)
    _run.info["lr_seen"] = lr
    if lr in blocked_lrs:
        gate.wait(20)
    if lr in broken_lrs or (lr in flaky_lrs and attempt == 1):
        raise ValueError(f"diverged at lr={lr} attempt {attempt}")
    return lr * 2


def _sweep(task: Any, lrs: list[float]) -> Any:
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def sweep() -> list[Any]:
        futures = task.map(lr=lrs)
        return [future.wait() or future.state for future in futures]

    return sweep


TRIAL_BACKENDS = ["file_storage", "sql_sqlite", "tinydb", "mongo", "sql_postgres", "sql_mariadb", "s3", "gcs"]


@pytest.fixture(scope="module", params=TRIAL_BACKENDS)
def trial_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    instance = next(b for b in load_backends() if b.name == request.param)
    try:
        instance.start(tmp_path_factory)
    except BackendUnavailable as exc:
        service_missing(f"{instance.name}: {exc}")
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    attempts.clear()
    flaky_lrs.clear()
    broken_lrs.clear()
    blocked_lrs.clear()
    gate.clear()
    ex.observers.clear()
    yield
    gate.set()
    ex.observers.clear()


def _events(memory: InMemoryObserver, name: str) -> list[dict[str, Any]]:
    return [kwargs for event, kwargs in list(memory.events) if event == name]


def _flow_run_artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        )


def test_eight_trials_on_threads_each_recorded_alone(trial_backend: Backend) -> None:
    memory = InMemoryObserver(priority=-100)  # last: it gets the backend's id
    ex.observers[:] = [trial_backend.observer(), memory]
    task = ex.task()
    sweep = _sweep(task, LRS)
    state = sweep(return_state=True)
    assert state.is_completed()

    runs = list(memory.runs)
    assert len(runs) == 8
    ids = [run["_id"] for run in runs]
    assert len(set(map(str, ids))) == 8, ids
    parent_ids = {run["meta"]["sweep"]["flow_run_id"] for run in runs}
    assert parent_ids == {str(state.state_details.flow_run_id)}
    assert len({run["meta"]["sweep"]["id"] for run in runs}) == 1
    assert len({run["meta"]["prefect"]["task_run_id"] for run in runs}) == 8

    for run in runs:
        record = trial_backend.record(run["_id"])
        lr = record.config["lr"]
        assert record.status == "COMPLETED"
        assert record.config["scaled"] == pytest.approx(lr * 100)  # Sacred's config semantics
        assert record.result == pytest.approx(lr * 2)
        info = {key: value for key, value in record.info.items() if key != "metrics"}  # Mongo's links
        assert info == {"lr_seen": lr}
        assert record.metrics["loss"]["values"] == pytest.approx([lr, 2 * lr, 3 * lr])
        lines = [line for line in record.captured_out.splitlines() if line]
        assert lines == [f"trial lr={lr} epoch={epoch}" for epoch in range(3)], record.captured_out
        assert record.meta["config_updates"] == {"lr": lr}
        assert record.meta["sweep"]["task_name"] == "sweep_trial"

    summary = [a for a in _flow_run_artifacts(state.state_details.flow_run_id) if a.type == "markdown"]
    assert len(summary) == 1
    table = summary[0].data
    assert "8 trials (8 COMPLETED)" in table
    assert "lr=0.7" in table and "loss=2.1" in table


def test_failing_and_retried_trials(tmp_path: Any) -> None:
    from prefect_sacred import FileStorageObserver

    memory = InMemoryObserver(priority=-100)  # last: it gets the backend's id
    ex.observers[:] = [FileStorageObserver(tmp_path), memory]
    broken_lrs.add(0.2)
    flaky_lrs.add(0.3)
    retried = ex.task().with_options(retries=1, retry_delay_seconds=0)  # still an experiment task
    sweep = _sweep(retried, [0.1, 0.2, 0.3])
    state = sweep(return_state=True)
    assert state.is_failed()  # the flow returns its trials' states: one failed

    assert len(_events(memory, "started_event")) == 3  # once per trial, retries included
    status = {run["config"]["lr"]: run["status"] for run in memory.runs}
    assert status == {0.1: "COMPLETED", 0.2: "FAILED", 0.3: "COMPLETED"}
    failed = _events(memory, "failed_event")
    assert len(failed) == 1
    assert "diverged at lr=0.2 attempt 2" in "".join(failed[0]["fail_trace"])
    assert attempts == {0.1: 1, 0.2: 2, 0.3: 2}
    flaky = next(run for run in memory.runs if run["config"]["lr"] == 0.3)
    assert flaky["captured_out"].count("trial lr=0.3 epoch=0") == 2  # both attempts' output
    summary = _flow_run_artifacts(state.state_details.flow_run_id)[0].data
    assert "3 trials (2 COMPLETED, 1 FAILED)" in summary


def test_parent_crash_interrupts_its_live_trials(tmp_path: Any) -> None:
    """A trial still running when its parent flow crashes is recorded INTERRUPTED by the parent."""
    memory = InMemoryObserver(priority=-100)  # last: it gets the backend's id
    ex.observers[:] = [memory]
    blocked_lrs.add(0.5)
    task = ex.task()

    class LeavingRunner(ThreadPoolTaskRunner):  # type: ignore[type-arg]
        """Like a second Ctrl-C: the flow ends without waiting for its running tasks."""

        def __exit__(self, *exc_info: Any) -> None:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    @flow(task_runner=LeavingRunner(max_workers=2))
    def sweep() -> None:
        task.submit(lr=0.5)
        deadline = time.monotonic() + 20
        while not _events(memory, "heartbeat_event") and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep()
    interrupted = _events(memory, "interrupted_event")
    assert [event["status"] for event in interrupted] == ["INTERRUPTED"]
    gate.set()
    time.sleep(0.5)  # the trial's own end then changes nothing
    assert _events(memory, "completed_event") == [] and _events(memory, "failed_event") == []


@pytest.mark.slow
def test_a_cancelled_served_sweep_is_ended_by_the_serve_process(tmp_path: Any) -> None:
    """The flow-run process dies mid-trial (as a served run's does when cancelled); the hook in
    the serve process, which never saw the trial, finishes it from its journal: INTERRUPTED."""
    import json
    import subprocess

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    from prefect_sacred import FileStorageObserver
    from tests.data import sweep_killed
    from tests.support import PYTHON, REPO, subprocess_env

    script = REPO / "tests" / "data" / "sweep_killed.py"
    done = subprocess.run(
        [PYTHON, str(script), str(tmp_path)], env=subprocess_env(), timeout=120, check=False
    )
    assert done.returncode == -9
    run_json = json.loads((tmp_path / "1" / "run.json").read_text())
    assert run_json["status"] == "RUNNING"
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_json["meta"]["sweep"]["flow_run_id"])

    sweep_killed.ex.observers[:] = [FileStorageObserver(tmp_path)]
    try:
        hook = sweep_killed.train_task.sweep_hook
        hook(flow=sweep_killed.sweep, flow_run=flow_run, state=Cancelling())
    finally:
        sweep_killed.ex.observers.clear()
    run_json = json.loads((tmp_path / "1" / "run.json").read_text())
    assert run_json["status"] == "INTERRUPTED"
    assert "killed trial lr=0.3 step=2" in (tmp_path / "1" / "cout.txt").read_text()
    metrics = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert metrics["loss"]["values"] == pytest.approx([0.3, 0.6, 0.9])
    summary = _flow_run_artifacts(flow_run.id)
    assert "1 trial (1 INTERRUPTED)" in summary[0].data
    assert "loss=0.9" in summary[0].data  # its last metric, from its journal


def _task_runs_recorded(flow_run_id: Any, count: int) -> None:
    """Wait until Prefect has recorded ``count`` task runs of the flow run (it records them from
    events, a moment after they ran)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if len(runs) >= count:
                return
            time.sleep(0.2)
    raise AssertionError(f"{len(runs)} task runs of flow run {flow_run_id} recorded, not {count}")


def test_the_parent_knows_its_trials_by_their_task_not_their_names() -> None:
    """Trials with their own task run names are the task's trials; a task whose name starts
    with the experiment's is not (the parent's hook reads its trials in other processes so)."""
    from prefect import task as prefect_task

    from prefect_sacred.tasks.trial_run import trial_key

    named = ex.task(task_run_name="lr-{lr}")
    assert named.with_options(name="other").task_key == trial_key("other")

    @prefect_task(name="sweep_trial-prep")
    def prep() -> int:
        return 1

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def sweep() -> None:
        prep()
        for future in named.map(lr=[0.1, 0.2]):
            future.wait()

    state = sweep(return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    _task_runs_recorded(flow_run_id, 3)
    trials = named.sweep_hook._trials_elsewhere(flow_run_id, known=set())
    assert sorted(task_run.name for task_run in trials) == ["lr-0.1", "lr-0.2"]


def test_the_parent_reads_every_trial_of_a_sweep_bigger_than_a_page() -> None:
    """The server returns 200 task runs or artifacts per call: the parent reads them all."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    from prefect_sacred.tasks.summary import published_rows

    count = 205
    big = ex.task()

    @flow
    def parent() -> None:
        pass

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(parent)
        for index in range(count):
            task_run = client.create_task_run(big, flow_run.id, dynamic_key=str(index), name=f"t-{index}")
            row = {"trial": f"t-{index}", "id": index, "status": "COMPLETED", "config": "", "metrics": ""}
            client.create_artifact(
                ArtifactCreate(
                    type="markdown",
                    data=f"trial {index}",
                    flow_run_id=flow_run.id,
                    task_run_id=task_run.id,
                    metadata_={"prefect_sacred_trial": json.dumps(row)},
                )
            )
    trials = big.sweep_hook._trials_elsewhere(flow_run.id, known=set())
    assert len(trials) == count
    rows = published_rows(flow_run.id)
    assert sorted(row["id"] for row in rows.values()) == list(range(count))
    assert set(rows) == {str(task_run.id) for task_run in trials}


threads_ex = Experiment("thread_trial")


@threads_ex.config
def threads_cfg() -> None:
    lr = 0.01  # noqa: F841


@threads_ex.main
def threads_main(lr: float) -> None:
    print(f"main thread lr={lr}")
    child = threading.Thread(target=lambda: print(f"child thread lr={lr}"))
    child.start()
    child.join()


def test_output_of_a_thread_the_trial_starts_is_the_trials() -> None:
    """``sys`` capture: a thread started in the body has no context; its output is still the
    run's when no other run in the process started before the thread."""
    memory = InMemoryObserver()
    threads_ex.observers[:] = [memory]
    try:
        threads_ex.run(config_updates={"lr": 0.5}, options={"--capture": "sys"})

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
        def sweep() -> None:
            for future in threads_ex.task().map(lr=[0.1, 0.2]):
                future.wait()

        assert sweep(return_state=True).is_completed()
    finally:
        threads_ex.observers.clear()
    outputs = {run["config"]["lr"]: run["captured_out"] for run in memory.runs}
    for lr, output in outputs.items():
        assert output.splitlines() == [f"main thread lr={lr}", f"child thread lr={lr}"], output
    assert sorted(outputs) == [0.1, 0.2, 0.5]


def test_trials_starting_together_in_a_fresh_process_seed_numpy_without_a_race(tmp_path: Any) -> None:
    """Each trial seeds numpy as it starts; in a process that has not imported numpy yet, the
    first trials import it on several threads at once (one saw it half initialised)."""
    import subprocess

    from tests.support import PYTHON, subprocess_env

    script = tmp_path / "fresh_sweep.py"
    script.write_text(
        "import sys\n"
        "from prefect import flow\n"
        "from prefect.task_runners import ThreadPoolTaskRunner\n"
        "from prefect_sacred import Experiment\n"
        "assert 'numpy' not in sys.modules\n"
        "ex = Experiment('fresh')\n"
        "@ex.main\n"
        "def main(lr=0.1, _rnd=None):\n"
        "    return lr\n"
        "task = ex.task()\n"
        "@flow(task_runner=ThreadPoolTaskRunner(max_workers=8))\n"
        "def sweep():\n"
        "    return [f.result() for f in task.map(lr=[0.1 * i for i in range(8)])]\n"
        "print('RESULTS', sweep())\n"
    )
    done = subprocess.run(
        [PYTHON, str(script)], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULTS [0.0, 0.1, 0.2" in done.stdout
