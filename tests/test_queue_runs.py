"""Queued runs, for real: ``-q`` and runs created through the client or ``--start-in`` are
recorded QUEUED, and the same record becomes COMPLETED when the served deployment runs them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support import PYTHON, subprocess_env, wait_for

EXPERIMENT = """
import datetime as dt
import os
import sys
import time
from prefect_sacred import Experiment, SlackObserver

ex = Experiment(sys.argv[-1] if sys.argv[1:2] in (["serve"], ["serve-daily"], ["deploy"]) else None)
ex.beat_interval = 0.5
if os.environ.get("TEST_SLACK_URL"):
    ex.observers.append(SlackObserver(os.environ["TEST_SLACK_URL"]))


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
    elif sys.argv[1:2] == ["serve-daily"]:  # daily, the first run at TEST_FIRST_RUN_AT
        from prefect.schedules import Interval

        import logging

        logging.getLogger("prefect_sacred.watch").setLevel(logging.INFO)  # in the serve log
        first = dt.datetime.fromisoformat(os.environ["TEST_FIRST_RUN_AT"])
        ex.serve("train", schedule=Interval(86400, anchor_date=first))
    elif sys.argv[1:2] == ["deploy"]:  # the deployment exists, nothing serves it yet
        ex.flow.to_deployment(name="train").apply()
    else:
        ex.run_commandline()
"""


class Setup:
    """A uniquely named experiment script, its FileStorage and SQLite observers (or ``observers``)."""

    def __init__(self, tmp_path: Path, observers: str | None = None, **env: str) -> None:
        self.name = f"queued-{uuid.uuid4().hex[:8]}"
        self.script = tmp_path / f"{self.name}.py"  # unnamed experiment: named after the file
        self.script.write_text(EXPERIMENT)
        self.runs = tmp_path / "runs"
        self.db = tmp_path / "runs.db"
        urls = f"file://{self.runs} sqlite:///{self.db}" if observers is None else observers
        self.env = subprocess_env(PREFECT_SACRED_OBSERVERS=urls, **env)

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, str(self.script), *args], capture_output=True, text=True, timeout=90, env=self.env
        )

    def deploy(self) -> None:
        done = self.call("deploy", self.name)
        assert done.returncode == 0, done.stderr

    @contextmanager
    def serving(self, mode: str = "serve") -> Iterator[None]:
        with open(self.script.with_suffix(".serve.log"), "wb") as log:  # read when a test fails
            process = subprocess.Popen(
                [PYTHON, str(self.script), mode, self.name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
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
        """The run's file record once both backends show ``status``: each observer is delivered
        to by its own worker, so the file record can be ahead of the SQL row."""
        return wait_for(
            lambda: (
                (record := self.record(run_id))["status"] == status
                and (str(run_id), status) in [row[:2] for row in self.sql_rows()]
                and record
            ),
            timeout=timeout,
            interval=0.2,
            what=f"run {run_id} to be {status} in both backends",
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
def test_a_run_queued_with_observer_flags_records_into_them_where_it_starts_and_when_cancelled(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from prefect_sacred.cli.watch import load_experiment
    from prefect_sacred.watch.watcher import Watcher

    setup = Setup(tmp_path, observers="")  # the serve process knows none of the flags' observers
    setup.deploy()
    here = tmp_path / "elsewhere"  # the flags' relative paths are relative to the queuer's directory
    here.mkdir()

    def queue(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, str(setup.script), "-q", *words], cwd=here, capture_output=True, text=True,
            timeout=90, env=setup.env,
        )  # fmt: skip

    flags = ["-F", "flag_runs", "-s", "sqlite:///flag_runs.db"]
    # Run 1 takes the other options too: they travel with it as well, but for -D (one line).
    asked = ["--comment", "for later", "-b", "0.25", "-n", "renamed", "-C", "no", "-D"]
    for epochs, more in ((3, asked), (4, [])):
        done = queue("with", f"epochs={epochs}", *flags, *more)
        assert done.returncode == 0, done.stderr
        assert ("-D/--pdb has no effect on a queued run" in done.stderr) == bool(more), done.stderr
    refused = queue("-F", "flag_runs", "-s", "postgresql://user:s3cret@127.0.0.1:9/runs")
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"{setup.script.name}: error: a queued run cannot take --sql with a credential in it"
    ), refused.stderr
    assert "s3cret" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "name that observer in the deployment's PREFECT_SACRED_OBSERVERS or in a Block" in refused.stderr

    runs, db = here / "flag_runs", here / "flag_runs.db"

    def state(run_id: int) -> tuple[str, str]:
        stored = json.loads((runs / str(run_id) / "run.json").read_text())["status"]
        with sqlite3.connect(db) as conn:
            [(in_sql,)] = conn.execute("select status from run where run_id = ?", (str(run_id),))
        return stored, in_sql

    assert [state(1), state(2)] == [("QUEUED", "QUEUED"), ("QUEUED", "QUEUED")]
    assert not (runs / "3").exists()  # the refused one wrote nothing
    meta = json.loads((runs / "2" / "run.json").read_text())["meta"]
    flow_run_id = uuid.UUID(meta["prefect"]["flow_run_id"])
    with get_client(sync_client=True) as client:
        label = client.read_flow_run(flow_run_id).labels["prefect-sacred.observer-flags"]
        assert json.loads(str(label)) == [["--file_storage", str(runs)], ["--sql", f"sqlite:///{db}"]]
        client.set_flow_run_state(flow_run_id, Cancelled(), force=True)
    ex = load_experiment(str(setup.script))
    watcher = Watcher(ex)
    watcher.check(flow_run_id)  # what a watcher does on the Cancelled event
    assert state(2) == ("INTERRUPTED", "INTERRUPTED")
    # ex.queue takes the flags too; one deleted unstarted is ended by a watcher that saw it queued.
    deleted = ex.queue({"epochs": 5}, options={"-F": str(runs), "-s": f"sqlite:///{db}"})
    assert state(deleted._id) == ("QUEUED", "QUEUED")
    watcher.backfill()
    with get_client(sync_client=True) as client:
        client.delete_flow_run(deleted.flow_run_id)
    watcher.check(deleted.flow_run_id)
    assert state(deleted._id) == ("INTERRUPTED", "INTERRUPTED")

    queued_meta = json.loads((runs / "1" / "run.json").read_text())["meta"]
    with setup.serving():
        wait_for(lambda: state(1) == ("COMPLETED", "COMPLETED"), timeout=90, interval=0.3, what="run 1")
    completed = json.loads((runs / "1" / "run.json").read_text())
    assert completed["result"] == 30
    meta = completed["meta"]
    assert meta["comment"] == queued_meta["comment"] == "for later"
    assert meta["options"] == queued_meta["options"]
    given = {"--comment": "for later", "--beat-interval": "0.25", "--name": "renamed", "--capture": "no"}
    assert {flag: meta["options"][flag] for flag in given} == given
    assert [meta["options"][key] for key in ("--queue", "--pdb", "UPDATE")] == [True, True, ["epochs=3"]]
    assert meta["config_updates"] == queued_meta["config_updates"] == {"epochs": 3}
    assert completed["experiment"]["name"] == "renamed"
    assert "trained 3 epochs" not in (runs / "1" / "cout.txt").read_text()  # -C no (else "sys")
    assert sorted(path.name for path in runs.iterdir() if path.name.isdigit()) == ["1", "2", "3"]


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
    cast(Any, ex.flow.to_deployment(name="train")).apply()  # a sync call: no coroutine
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


def test_a_flag_naming_a_store_the_deployment_records_into_adds_no_second_observer(tmp_path: Path) -> None:
    from prefect_sacred.flows.travel import FLAGS_LABEL, flag_observers, travelling_flags
    from prefect_sacred.observers import FileStorageObserver

    runs, other = tmp_path / "runs", tmp_path / "other"
    label = travelling_flags([("--file_storage", str(runs)), ("--file_storage", str(other))])
    added = flag_observers({FLAGS_LABEL: label}, [FileStorageObserver(runs)])
    assert [observer.basedir for observer in added] == [str(other)]  # type: ignore[attr-defined]


def test_queued_options_travel_without_credentials_and_come_back_as_asked() -> None:
    from prefect_sacred.flows.options import UsageError, resolve_options
    from prefect_sacred.flows.travel import OPTIONS_LABEL, queue_notes, travelled_options, travelling_options

    options = resolve_options(
        {"-q": 1, "-c": "lr sweep", "-b": "0.5", "-C": "no", "-l": "debug", "-f": 1, "-D": 1}
    )
    words = {"COMMAND": None, "UPDATE": ["lr=0.5", "url=https://user:pw@host/x"], "with": True}
    label = travelling_options(options, words, {"lr": 0.5, "opt": {"momentum": 0.9}})
    assert "pw" not in label
    back = travelled_options({OPTIONS_LABEL: label})
    assert back is not None
    got = back.options
    assert (got.comment, got.beat_interval, got.capture, got.loglevel) == ("lr sweep", 0.5, "no", "DEBUG")
    assert got.force and not got.pdb  # -D is shown in meta.options, and acts no more
    assert got.recorded == options.recorded
    assert back.words == {**words, "UPDATE": ["lr=0.5", "url=https://user:***@host/x"]}
    config = {"lr": 0.5, "opt": {"momentum": 0.9, "nesterov": False}, "seed": 3}
    assert back.config_updates(config) == {"lr": 0.5, "opt": {"momentum": 0.9}}
    [note] = queue_notes(options)
    assert note.startswith("-D/--pdb has no effect on a queued run")
    with pytest.raises(UsageError, match="a queued run cannot take --comment with a credential") as refused:
        travelling_options(resolve_options({"-c": "see postgresql://me:s3cret@db/runs"}), None, None)
    assert "s3cret" not in str(refused.value)


def test_a_queued_record_an_observer_refused_once_is_given_again_with_the_runs_id(tmp_path: Path) -> None:
    """queued_event goes through the run's fan-out: the first observer's outage neither stops
    the others nor loses its own record, which gets the id the next observer gave."""
    from prefect_sacred import Experiment, FileStorageObserver, RunObserver

    class FlakyFirst(RunObserver):
        priority = 100  # asked first

        def __init__(self) -> None:
            self.calls: list[Any] = []

        def queued_event(self, ex_info: Any, command: Any, host_info: Any, queue_time: Any,
                         config: Any, meta_info: Any, _id: Any) -> Any:  # fmt: skip
            self.calls.append(_id)
            if len(self.calls) == 1:
                raise ConnectionError("database is away")
            return _id

    flaky = FlakyFirst()
    ex = Experiment(f"queued-flaky-{uuid.uuid4().hex[:8]}")
    ex.observers[:] = [flaky, FileStorageObserver(tmp_path / "runs")]

    @ex.main
    def train(epochs: int = 2) -> int:
        return epochs

    cast(Any, ex.flow.to_deployment(name="train")).apply()
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("prefect_sacred").addHandler(handler)  # whatever Prefect's logging setup is
    try:
        queued = ex.queue()
    finally:
        logging.getLogger("prefect_sacred").removeHandler(handler)
    assert (tmp_path / "runs" / str(queued._id) / "run.json").exists()
    assert flaky.calls == [None, queued._id]  # refused, then given the id FileStorage chose
    assert any(
        "FlakyFirst could not record the run QUEUED" in line and "database is away" in line for line in said
    )
