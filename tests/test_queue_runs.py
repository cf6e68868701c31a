"""Queued runs, for real: ``-q`` and runs created through the client or ``--start-in`` are
recorded QUEUED, and the same record becomes COMPLETED when the served deployment runs them."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, subprocess_env, wait_for

EXPERIMENT = """
import sys
import time
from prefect_sacred import Experiment

ex = Experiment(sys.argv[-1] if sys.argv[1:2] in (["serve"], ["deploy"]) else None)
ex.beat_interval = 0.5


@ex.config
def cfg():
    epochs = 2
    lr = 0.1 / epochs
    pause = 0.0


@ex.main
def train(epochs, lr, pause, _run):
    for epoch in range(epochs):
        _run.log_scalar("loss", 1 / (epoch + 1), epoch)
        time.sleep(pause)
    print(f"trained {epochs} epochs at lr={lr}")
    return epochs * 10


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        ex.serve("train")
    elif sys.argv[1:2] == ["deploy"]:  # the deployment exists, nothing serves it yet
        ex.flow.to_deployment(name="train").apply()
    else:
        ex.run_commandline()
"""


class Setup:
    """A uniquely named experiment script, its FileStorage and SQLite observers."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"queued-{uuid.uuid4().hex[:8]}"
        self.script = tmp_path / f"{self.name}.py"  # unnamed experiment: named after the file
        self.script.write_text(EXPERIMENT)
        self.runs = tmp_path / "runs"
        self.db = tmp_path / "runs.db"
        self.env = subprocess_env(PREFECT_SACRED_OBSERVERS=f"file://{self.runs} sqlite:///{self.db}")

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, str(self.script), *args], capture_output=True, text=True, timeout=90, env=self.env
        )

    def deploy(self) -> None:
        done = self.call("deploy", self.name)
        assert done.returncode == 0, done.stderr

    @contextmanager
    def serving(self) -> Iterator[None]:
        process = subprocess.Popen(
            [PYTHON, str(self.script), "serve", self.name],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield
        finally:
            process.terminate()
            process.wait(20)

    def record(self, run_id: Any) -> dict[str, Any]:
        return dict(json.loads((self.runs / str(run_id) / "run.json").read_text()))

    def config(self, run_id: Any) -> dict[str, Any]:
        return dict(json.loads((self.runs / str(run_id) / "config.json").read_text()))

    def sql_rows(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("select run_id, status, config from run order by id"))

    def wait_status(self, run_id: Any, status: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (record := self.record(run_id))["status"] == status and record,
            timeout=timeout,
            interval=0.2,
            what=f"run {run_id} to be {status}",
        )


def deployment_id(name: str) -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{name}/train").id


@pytest.mark.slow
def test_queue_from_the_command_line_records_queued_then_the_served_run_completes_it(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    setup.deploy()
    queued = setup.call("-q", "with", "epochs=3")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("Queued run 1 as flow run "), queued.stdout
    record = setup.record(1)
    assert record["status"] == "QUEUED"
    assert record["meta"]["options"]["--queue"] is True
    assert "queue_time" in record["meta"]
    config = setup.config(1)
    assert (config["epochs"], config["lr"]) == (3, 0.1 / 3)
    assert [(run_id, status) for run_id, status, _ in setup.sql_rows()] == [("1", "QUEUED")]

    with setup.serving():
        done = setup.wait_status(1, "COMPLETED", timeout=90)
    assert done["result"] == 30
    assert setup.config(1) == config  # the seed too: the run drew no other
    assert not (setup.runs / "2").exists()
    rows = setup.sql_rows()
    assert [(run_id, status) for run_id, status, _ in rows] == [("1", "COMPLETED")]
    assert json.loads(rows[0][2])["seed"] == config["seed"]


@pytest.mark.slow
def test_queue_without_a_deployment_says_it_needs_one(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    done = setup.call("-q")
    assert done.returncode == 2
    assert "a queued run needs a deployment of flow" in done.stderr
    assert not setup.runs.exists()


@pytest.mark.slow
def test_runs_created_through_the_client_and_with_start_in_are_queued_at_once_then_completed(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    setup = Setup(tmp_path)
    setup.deploy()
    with setup.serving():
        start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=15)
        with get_client(sync_client=True) as client:
            client.create_flow_run_from_deployment(
                deployment_id(setup.name), parameters={"epochs": 4}, state=Scheduled(scheduled_time=start)
            )
        first = setup.wait_status(1, "QUEUED", timeout=30)
        assert dt.datetime.now(dt.UTC) < start, "recorded QUEUED only when it started"
        cli_start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=15)  # later than the run's own
        cli = subprocess.run(
            [PYTHON, "-m", "prefect", "deployment", "run", f"{setup.name}/train", "--start-in", "15s"],
            capture_output=True, text=True, timeout=60, env=setup.env,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        second = setup.wait_status(2, "QUEUED", timeout=30)
        assert dt.datetime.now(dt.UTC) < cli_start, "recorded QUEUED only when it started"
        queued_configs = {1: setup.config(1), 2: setup.config(2)}
        assert queued_configs[1]["epochs"] == 4 and queued_configs[2]["epochs"] == 2
        for run_id in (1, 2):
            setup.wait_status(run_id, "COMPLETED", timeout=60)
    assert first["meta"]["prefect"]["flow_run_id"] != second["meta"]["prefect"]["flow_run_id"]
    assert {1: setup.config(1), 2: setup.config(2)} == queued_configs
    assert sorted((run_id, status) for run_id, status, _ in setup.sql_rows()) == [
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
    ]
    assert not (setup.runs / "3").exists()


def test_ex_queue_records_queued_and_labels_the_flow_run_with_the_id(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from prefect_sacred import Experiment, FileStorageObserver

    ex = Experiment(f"queued-api-{uuid.uuid4().hex[:8]}")
    ex.observers.append(FileStorageObserver(tmp_path / "runs"))

    @ex.main
    def train(epochs: int = 2, lr: float = 0.1) -> int:
        return epochs

    with pytest.raises(ValueError, match="a queued run needs a deployment of flow"):
        ex.queue()
    assert not (tmp_path / "runs").exists()
    ex.flow.to_deployment(name="train").apply()
    queued = ex.queue({"epochs": 3}, options={"--comment": "later"})
    record = json.loads((tmp_path / "runs" / str(queued._id) / "run.json").read_text())
    assert (record["status"], record["meta"]["comment"]) == ("QUEUED", "later")
    assert record["meta"]["options"]["--queue"] is True
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(queued.flow_run_id)
    assert flow_run.labels["prefect-sacred.queued-id"] == queued._id
    assert f"sacred-id:{queued._id}" in flow_run.tags
    assert flow_run.parameters["epochs"] == 3 and flow_run.parameters["seed"] == queued.config["seed"]
    assert flow_run.state is not None and flow_run.state.type.value == "SCHEDULED"
