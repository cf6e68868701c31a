"""``prefect-sacred sync --mongo-dumps``: the runs MongoDB could not take go back into it, once.

The dumps are made the way a user gets them: an experiment with a ``MongoObserver`` and no
journal, whose server (the Mongo wire server behind a fault proxy) goes away before the run
ends. They are restored with the console script in a subprocess and read back with pymongo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from prefect_sacred import Experiment, MongoObserver, QueuedMongoObserver
from prefect_sacred.cli import main
from prefect_sacred.observers.registry import ObserverConfigError
from tests.backends.mongo import read_run
from tests.servers.tcp_proxy import ProxiedBackend
from tests.support import REPO, free_port, subprocess_env

DB = "dumped"


@pytest.fixture(autouse=True)
def no_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a journal the dump goes into it and journal sync delivers the run; without one,
    # the dump in failure_dir is all there is.
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL", "0")


def dumped_run(mongo_proxy: ProxiedBackend, tmp_path: Path, queued: bool = True) -> tuple[Any, Path, Path]:
    """Run an experiment whose MongoDB goes away mid-run; its id, dump dir and artifact."""
    failures, artifact = tmp_path / "failures", tmp_path / "model.txt"
    artifact.write_text("weights\n")
    # The queued observer takes every event and, when it gives up, saves the run to
    # failure_dir; a plain one is given what it missed by the end of the run (no journal).
    observer: Any = (
        QueuedMongoObserver(
            url=mongo_proxy.url,
            db_name=DB,
            failure_dir=failures,
            retry_interval=0.2,
            join_timeout=1.0,
            serverSelectionTimeoutMS=300,
        )
        if queued
        else MongoObserver(
            url=mongo_proxy.url, db_name=DB, failure_dir=failures, serverSelectionTimeoutMS=300
        )
    )
    ex = Experiment("dumped")
    ex.join_timeout = 1.0
    ex.observers.append(observer)

    @ex.main
    def train(_run: Any = None) -> int:
        for step in range(5):
            _run.log_scalar("loss", float(step), step)
        print("before the outage")
        time.sleep(0.6)  # a few beats: these points and this output reach MongoDB
        mongo_proxy.proxy.drop()
        for step in range(5, 12):
            _run.log_scalar("loss", float(step), step)
        _run.add_artifact(str(artifact), "model.txt")
        print("after the outage")
        return 7

    run = ex.run(options={"--beat-interval": 0.1})
    assert list(failures.glob("sacred_mongo_fail_*.json")), "the run was not dumped"
    return run._id, failures, artifact


def sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "prefect-sacred"), "sync", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def stored(mongo_proxy: ProxiedBackend, run_id: Any) -> tuple[dict[str, Any], Any]:
    database = mongo_proxy.extra["server"].client[DB]
    return database.runs.find_one({"_id": run_id}), read_run(database, run_id)


@pytest.mark.parametrize("queued", [True, False], ids=["QueuedMongoObserver", "MongoObserver"])
def test_sync_restores_a_dumped_run_once_and_keeps_dumps_it_could_not(
    mongo_proxy: ProxiedBackend, tmp_path: Path, queued: bool
) -> None:
    run_id, failures, artifact = dumped_run(mongo_proxy, tmp_path, queued)
    dumps = sorted(failures.glob("sacred_mongo_fail_*.json"))
    doc, _ = stored(mongo_proxy, run_id)
    assert doc["status"] == "RUNNING"  # the end is only in the dump(s)
    assert all(json_util.loads(path.read_text())["run"]["status"] == "COMPLETED" for path in dumps)

    # The database is down: one line per dump naming the server without the password; kept.
    down = f"mongodb://restorer:s3cret@127.0.0.1:{free_port()}/{DB}?serverSelectionTimeoutMS=500"
    began = time.monotonic()
    done = sync("--mongo-dumps", str(failures), "-m", down)
    assert time.monotonic() - began < 30
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(dumps) and all(
        "failed" in line and "cannot reach MongoDB" in line for line in lines
    )
    assert "restorer:***@127.0.0.1" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr
    assert sorted(failures.glob("sacred_mongo_fail_*.json")) == dumps

    # Back, but the artifact is gone: the rest is restored, the missing file named, the dump kept.
    mongo_proxy.proxy.restore()
    away = tmp_path / "away.txt"
    artifact.rename(away)
    done = sync("--mongo-dumps", str(failures), "-m", mongo_proxy.url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing" in done.stdout and str(artifact) in done.stdout
    assert sorted(failures.glob("sacred_mongo_fail_*.json")) == dumps
    doc, record = stored(mongo_proxy, run_id)
    assert doc["status"] == "COMPLETED" and doc["result"] == 7
    assert record.metrics["loss"]["steps"] == list(range(12))  # every point, once
    assert "before the outage" in record.captured_out and "after the outage" in record.captured_out

    # The file is back: restoring the same dump again adds the artifact and no point twice.
    away.rename(artifact)
    done = sync("--mongo-dumps", str(failures), "-m", mongo_proxy.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("restored run") == len(dumps) and "0 metric point(s) added" in done.stdout
    assert not list(failures.glob("sacred_mongo_fail_*.json"))
    assert sorted(failures.glob("*.restored")) == [Path(f"{path}.restored") for path in dumps]
    doc, record = stored(mongo_proxy, run_id)
    assert doc["status"] == "COMPLETED" and record.metrics["loss"]["values"] == [float(s) for s in range(12)]
    assert record.artifacts == {"model.txt": b"weights\n"}
    metric = mongo_proxy.extra["server"].client[DB].metrics.find_one({"run_id": run_id})
    assert doc["info"]["metrics"] == [{"name": "loss", "id": str(metric["_id"])}]  # what Omniboard joins on

    # A second sync finds nothing to do.
    done = sync("--mongo-dumps", str(failures), "-m", mongo_proxy.url)
    assert done.returncode == 0 and "no Mongo failure dumps" in done.stdout, done.stdout + done.stderr
    assert stored(mongo_proxy, run_id)[1] == record


def test_the_server_comes_from_the_one_mongo_observer_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect_sacred.observers.mongo.restore import mongo_target

    monkeypatch.setenv("PREFECT_SACRED_OBSERVERS", f"file://{tmp_path} mongodb://h:1/exp!5")
    assert mongo_target(None) == {"url": "mongodb://h:1/exp", "db_name": "exp", "priority": 5}
    assert mongo_target("127.0.0.1:2:other") == {"url": "127.0.0.1:2", "db_name": "other"}
    monkeypatch.setenv("PREFECT_SACRED_OBSERVERS", "mongodb://h:1/a mongodb://h:2/b")
    with pytest.raises(ObserverConfigError, match="2 MongoDB observers"):
        mongo_target(None)
    monkeypatch.delenv("PREFECT_SACRED_OBSERVERS")
    assert main(["sync", "--mongo-dumps", str(tmp_path)]) == 0  # nothing to restore: no server needed
    assert "no Mongo failure dumps" in capsys.readouterr().out
    (tmp_path / "sacred_mongo_fail_1_x.json").write_text("{}")
    assert main(["sync", "--mongo-dumps", str(tmp_path)]) == 2
    assert "say which server with -m" in capsys.readouterr().err
    assert main(["sync", "--mongo-dumps", str(tmp_path), "-m", "mongodb://"]) == 2
    with pytest.raises(SystemExit) as exited:
        main(["sync", "-m", "db"])  # -m goes with --mongo-dumps only
    assert exited.value.code == 2
    capsys.readouterr()


def test_files_that_are_not_dumps_fail_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "sacred_mongo_fail_1_x.json"
    bad.write_text("{not json")
    assert main(["sync", "--mongo-dumps", str(bad), "-m", f"127.0.0.1:{free_port()}"]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{bad}: failed: not a MongoObserver failure dump") and bad.exists()
    os.makedirs(tmp_path / "none")
    assert main(["sync", "--mongo-dumps", str(tmp_path / "none"), "-m", "db"]) == 0
    assert "no Mongo failure dumps" in capsys.readouterr().out


def test_points_a_failed_write_stored_are_not_added_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from prefect_sacred.observers.mongo import read_captured_out, read_metric
    from tests.servers.mongo_wire import MongoWireServer

    start, stamp = dt.datetime(2026, 1, 1, 12), dt.datetime(2026, 1, 1, 12, 0, 1, 500000)
    output = "".join(f"line {n}\n" for n in range(40_000))  # past the document's 256 K characters
    dump = {
        "reason": "AutoReconnect: gone",
        "database": DB,
        "runs_collection": "runs",
        "metrics_collection": "metrics",
        "run": {"_id": 3, "status": "COMPLETED", "start_time": start, "captured_out": output, "info": {}},
        # steps 5 and 6 were stored by a write whose reply was lost
        "pending_metrics": {
            "loss": {"steps": list(range(5, 9)), "values": [5.0, 6.0, 7.0, 8.0], "timestamps": [stamp] * 4},
            "acc": {"steps": [0], "values": [0.5], "timestamps": [stamp]},
        },
        "pending_files": [],
    }
    path = tmp_path / "sacred_mongo_fail_3_abc.json"
    path.write_text(json_util.dumps(dump))
    with MongoWireServer() as server:
        database = server.client[DB]
        database.runs.insert_one(
            {"_id": 3, "status": "RUNNING", "start_time": start, "omniboard": {"tags": ["a"]}}
        )
        database.metrics.insert_one(
            {"run_id": 3, "name": "loss", "steps": list(range(7)), "values": [float(n) for n in range(7)],
             "timestamps": [stamp] * 7}
        )  # fmt: skip
        assert main(["sync", "--mongo-dumps", str(path), "-m", server.uri]) == 0
        assert "3 metric point(s) added, 2 already stored" in capsys.readouterr().out
        doc = database.runs.find_one({"_id": 3})
        assert doc["status"] == "COMPLETED" and doc["omniboard"] == {"tags": ["a"]}  # others' fields stay
        assert read_captured_out(database, doc) == output and len(doc["captured_out"]) < 300 * 1024
        loss = read_metric(database.metrics, database.metrics_chunks, 3, "loss")
        assert loss["steps"] == list(range(9)) and loss["values"] == [float(n) for n in range(9)]
        assert {ref["name"] for ref in doc["info"]["metrics"]} == {"loss", "acc"}

        # A server that lost its data and gave the id to another run: that run is not overwritten.
        other = tmp_path / "sacred_mongo_fail_3_def.json"
        other.write_text(json_util.dumps({**dump, "run": {**dump["run"], "start_time": stamp}}))
        assert main(["sync", "--mongo-dumps", str(other), "-m", f"{server.uri.split('/?')[0]}/{DB}"]) == 1
        assert "is another run" in capsys.readouterr().out and other.exists()
        assert main(["sync", "--mongo-dumps", str(other), "-m", server.uri.replace("/?", "/elsewhere?")]) == 1
        assert "belongs to database 'dumped'" in capsys.readouterr().out
        assert database.runs.find_one({"_id": 3})["start_time"] == start
