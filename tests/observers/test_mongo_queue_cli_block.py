"""QueuedMongoObserver through an outage, the -m grammar and command line, and the MongoDB block."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import json_util

from prefect_sacred import Experiment, ObserverConfigError, QueuedMongoObserver
from prefect_sacred.blocks import MongoDBObserverBlock
from prefect_sacred.observers.mongo import parse_mongo_db_arg, read_metric
from prefect_sacred.observers.queue import UndeliveredEvents
from prefect_sacred.observers.registry import observer_from_url
from tests.servers.mongo_wire import MongoWireServer
from tests.support import PYTHON, subprocess_env


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("foo", {"db_name": "foo"}),
        ("foo.bar", {"db_name": "foo", "collection": "bar"}),
        ("localhost:28017", {"url": "localhost:28017"}),
        ("localhost:28017:foo", {"url": "localhost:28017", "db_name": "foo"}),
        ("localhost:28017:foo.bar", {"url": "localhost:28017", "db_name": "foo", "collection": "bar"}),
        ("foo.bar:12!17", {"db_name": "foo", "collection": "bar", "overwrite": "12", "priority": 17}),
        ("foo!-123", {"db_name": "foo", "priority": -123}),
        (
            "mongodb://u:p%40w@h1:1,h2:2/exp?authSource=admin!5",
            {"url": "mongodb://u:p%40w@h1:1,h2:2/exp?authSource=admin", "db_name": "exp", "priority": 5},
        ),
        (
            "mongodb+srv://u:pw@cluster0.example.net/exp.runs2",
            {
                "url": "mongodb+srv://u:pw@cluster0.example.net/exp.runs2",
                "db_name": "exp",
                "collection": "runs2",
            },
        ),
        ("mongodb://h", {"url": "mongodb://h"}),
    ],
)
def test_mongo_db_grammar(value: str, expected: dict[str, Any]) -> None:
    assert parse_mongo_db_arg(value) == expected


@pytest.mark.parametrize(
    "value", ["", "1db", "host:99999", "mongodb://", "mongodb://u:pw@/db", "a b", "db..c"]
)
def test_malformed_mongo_db_values_are_config_errors(value: str) -> None:
    with pytest.raises(ObserverConfigError):
        parse_mongo_db_arg(value)


def test_url_scheme_builds_an_observer_without_connecting() -> None:
    observer = observer_from_url("mongodb+srv://u:pw@cluster0.example.net/exp")
    assert type(observer).__name__ == "MongoObserver" and observer.runs.database.name == "exp"


def _experiment(observer: Any, stop_and_restart: MongoWireServer | None = None) -> Experiment:
    ex = Experiment("outage")
    ex.observers.append(observer)

    @ex.main
    def train(_run: Any = None) -> str:
        for step in range(30):
            _run.log_scalar("loss", step, step)
            print(f"line {step}")
            if step == 10 and stop_and_restart is not None:
                stop_and_restart.stop()
            if step == 20 and stop_and_restart is not None:
                stop_and_restart.start()
            time.sleep(0.05)
        return "done"

    return ex


def test_queued_observer_delivers_everything_after_an_outage(tmp_path: Path) -> None:
    with MongoWireServer() as server:
        observer = QueuedMongoObserver(url=server.uri, retry_interval=0.2, serverSelectionTimeoutMS=300)
        assert observer.priority == 30  # delegated, unlike Sacred's 0
        run = _experiment(observer, server).run(options={"--beat-interval": 0.1})
        db = pymongo.MongoClient(server.uri)["sacred"]
        doc = db.runs.find_one({"_id": run._id})
        assert doc["status"] == "COMPLETED" and doc["result"] == "done"
        assert all(f"line {step}\n" in doc["captured_out"] for step in range(30))
        assert read_metric(db.metrics, db.metrics_chunks, run._id, "loss")["steps"] == list(range(30))


def test_plain_observer_ends_with_the_right_status_after_an_outage(tmp_path: Path) -> None:
    from prefect_sacred import MongoObserver

    with MongoWireServer() as server:
        observer = MongoObserver(url=server.uri, serverSelectionTimeoutMS=200)
        run = _experiment(observer, server).run(options={"--beat-interval": 0.1})
        doc = pymongo.MongoClient(server.uri)["sacred"].runs.find_one({"_id": run._id})
        assert doc["status"] == "COMPLETED" and "line 29\n" in doc["captured_out"]


def test_queue_gives_up_after_a_bounded_wait_and_saves_the_run(tmp_path: Path) -> None:
    server = MongoWireServer()
    server.start()
    observer = QueuedMongoObserver(
        url=server.uri,
        retry_interval=0.2,
        serverSelectionTimeoutMS=200,
        join_timeout=1.0,
        failure_dir=tmp_path,
    )
    ex = Experiment("gone")
    ex.observers.append(observer)

    @ex.main
    def train(_run: Any = None) -> int:
        server.stop()
        _run.log_scalar("m", 1.0)
        print("unsaved output")
        return 7

    began = time.monotonic()
    run = ex.run(options={"--beat-interval": 0})
    assert time.monotonic() - began < 20
    assert run.observer_errors  # the give-up is reported, not silent
    [path] = list(tmp_path.glob("sacred_mongo_fail_*.json"))
    dump = json_util.loads(path.read_text())
    assert dump["run"]["status"] == "COMPLETED" and dump["run"]["result"] == 7
    assert "unsaved output" in dump["run"]["captured_out"]
    assert dump["pending_metrics"]["m"]["values"] == [1.0]
    assert issubclass(UndeliveredEvents, RuntimeError)


SCRIPT = """
from prefect_sacred import Experiment
ex = Experiment("cli")

@ex.automain
def main(lr: float = 0.1, _run=None):
    _run.log_scalar("acc", 0.9)
    print("hello from the script")
    return lr * 2
"""


@pytest.mark.slow
def test_command_line_run_with_mongo_flag(tmp_path: Path) -> None:
    script = tmp_path / "exp.py"
    script.write_text(SCRIPT)
    with MongoWireServer() as server:
        done = subprocess.run(
            [PYTHON, str(script), "with", "lr=0.5", "-m", f"127.0.0.1:{server.port}:clidb"],
            capture_output=True,
            text=True,
            timeout=120,
            env=subprocess_env(),
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        doc = pymongo.MongoClient(server.uri)["clidb"].runs.find_one({})
        assert doc["status"] == "COMPLETED" and doc["result"] == 1.0 and doc["config"]["lr"] == 0.5
        assert "hello from the script" in doc["captured_out"]
        assert doc["info"]["metrics"][0]["name"] == "acc"
    bad = subprocess.run(
        [PYTHON, str(script), "-m", "mongodb://"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_block_round_trip_builds_an_observer_and_hides_the_password() -> None:
    block = MongoDBObserverBlock(
        url="mongodb://alice:s3cret@127.0.0.1:1/?authSource=admin",
        db_name="exp",
        client_options={"tls": False},
        queued=True,
    )
    block.save("test-mongo", overwrite=True)
    loaded = MongoDBObserverBlock.load("test-mongo")
    assert "s3cret" not in repr(loaded)
    observer = loaded.observer()
    assert isinstance(observer, QueuedMongoObserver) and observer.runs.database.name == "exp"
    generic = observer_from_url("block://sacred-mongodb/test-mongo")
    assert isinstance(generic, QueuedMongoObserver)


class TestBlockStandards:
    """Prefect's BlockStandardTestSuite, minus the logo check (it downloads the image)."""

    from prefect.testing.standard_test_suites import BlockStandardTestSuite as _Suite

    block = pytest.fixture(lambda self: MongoDBObserverBlock)
    test_has_a_description = _Suite.test_has_a_description
    test_has_a_documentation_url = _Suite.test_has_a_documentation_url
    test_all_fields_have_a_description = _Suite.test_all_fields_have_a_description
    test_has_a_valid_code_example = _Suite.test_has_a_valid_code_example


def test_importing_the_blocks_does_not_import_pymongo() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, prefect_sacred.blocks; print('pymongo' in sys.modules)"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.stdout.strip() == "False"
