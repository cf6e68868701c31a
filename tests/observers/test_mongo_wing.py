"""The Mongo wing's contract with the run and the queue: output deltas, undelivered events, layout."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gridfs
import pymongo
import pytest
from bson import json_util

import prefect_sacred
from prefect_sacred.observers.base import InvalidArtifactName, OutputDelta, PendingEvent
from prefect_sacred.observers.mongo import MongoObserver, QueuedMongoObserver, read_captured_out
from tests.servers.mongo_wire import MongoWireServer
from tests.support import subprocess_env

NOW = dt.datetime(2024, 5, 6, 7, 8, 9)
LIMIT = 20_000  # characters in the document; longer output goes to GridFS


@pytest.fixture()
def server() -> Iterator[MongoWireServer]:
    with MongoWireServer() as wire:
        yield wire


@pytest.fixture()
def db(server: MongoWireServer) -> Any:
    return pymongo.MongoClient(server.uri)["sacred"]


def start(observer: MongoObserver, tmp_path: Path) -> Any:
    return observer.started_event(
        ex_info={"name": "exp", "base_dir": str(tmp_path), "sources": []},
        command="main",
        host_info={},
        start_time=NOW,
        config={},
        meta_info={},
        _id=None,
    )


def heartbeat(observer: MongoObserver, captured_out: str, delta: OutputDelta | None) -> None:
    observer.heartbeat_event(
        info={}, captured_out=captured_out, beat_time=NOW, result=None, output_delta=delta
    )


def pending(method: Any, *args: Any, **kwargs: Any) -> PendingEvent:
    """The event a queue keeps for ``method(*args, **kwargs)``."""
    named = "name" in {field.name for field in dataclasses.fields(PendingEvent)}
    name = {"name": method.__name__} if named else {}
    return PendingEvent(method=method, args=args, kwargs=kwargs, **name)


def stored_output(db: Any, run_id: Any) -> str:
    return read_captured_out(db, db.runs.find_one({"_id": run_id}))


@pytest.mark.parametrize("first_size", [10, 3 * LIMIT // 2], ids=["in the document", "in GridFS"])
def test_a_heartbeat_appends_the_delta_and_trusts_it_over_captured_out(
    server: MongoWireServer, db: Any, tmp_path: Path, first_size: int
) -> None:
    observer = MongoObserver(url=server.uri, captured_out_limit=LIMIT)
    run_id = start(observer, tmp_path)
    first = "a" * (first_size - 1) + "\n"
    heartbeat(observer, first, OutputDelta(0, first))
    # captured_out differs from what is stored, but the delta continues it: only the delta counts.
    heartbeat(observer, "not read when the delta continues the output", OutputDelta(len(first), "more\n"))
    heartbeat(observer, "nor here", OutputDelta(len(first) + 5, ""))  # a beat without new output
    assert stored_output(db, run_id) == first + "more\n"
    observer.completed_event(stop_time=NOW, result=None)
    doc = db.runs.find_one({"_id": run_id})
    assert read_captured_out(db, doc) == first + "more\n"
    if first_size > LIMIT:
        assert gridfs.GridFS(db).get(doc["captured_out_file"]).read().decode() == first + "more\n"


@pytest.mark.parametrize("first_size", [10, 3 * LIMIT // 2], ids=["in the document", "in GridFS"])
@pytest.mark.parametrize(
    "start_at", [2, -1, None], ids=["rewrites earlier output", "skips a beat", "no delta"]
)
def test_output_is_stored_whole_when_the_delta_does_not_continue_it(
    server: MongoWireServer, db: Any, tmp_path: Path, first_size: int, start_at: int | None
) -> None:
    observer = MongoObserver(url=server.uri, captured_out_limit=LIMIT)
    run_id = start(observer, tmp_path)
    first = "a" * (first_size - 1) + "\n"
    heartbeat(observer, first, OutputDelta(0, first))
    whole = "rewritten by a captured_out_filter\n" + "b" * first_size
    delta = None if start_at is None else OutputDelta(start_at if start_at >= 0 else len(first) + 5, "Z\n")
    heartbeat(observer, whole, delta)
    assert stored_output(db, run_id) == whole
    heartbeat(observer, "not read", OutputDelta(len(whole), "then appended\n"))
    observer.completed_event(stop_time=NOW, result=None)
    doc = db.runs.find_one({"_id": run_id})
    assert read_captured_out(db, doc) == whole + "then appended\n"
    if first_size > LIMIT:  # the file of the old output is gone, the new one holds all of it
        assert db["fs.files"].count_documents({"filename": f"captured_out://runs/{run_id}"}) == 1
        assert gridfs.GridFS(db).get(doc["captured_out_file"]).read().decode() == whole + "then appended\n"


def test_save_undelivered_applies_the_events_without_writing_and_saves_the_run(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    observer = MongoObserver(url=server.uri, failure_dir=tmp_path / "failures")
    run_id = start(observer, tmp_path)
    heartbeat(observer, "before\n", OutputDelta(0, "before\n"))
    resource = tmp_path / "data.csv"
    resource.write_text("a,b\n")
    metrics = {"m": {"name": "m", "steps": [0, 1], "values": [0.5, 1.0], "timestamps": [NOW, NOW]}}
    events = [
        pending(observer.log_metrics, metrics_by_name=metrics, info={}),
        pending(observer.resource_event, str(resource)),  # Sacred's tests pass arguments positionally
        pending(
            observer.heartbeat_event,
            info={"epoch": 2},
            captured_out="before\nafter\n",
            beat_time=NOW,
            result=None,
            output_delta=OutputDelta(7, "after\n"),
        ),
        pending(observer.completed_event, stop_time=NOW, result=3),
    ]
    path = Path(observer.save_undelivered(events, "ServerSelectionTimeoutError: gone"))
    assert path.parent == tmp_path / "failures" and path.name.startswith(f"sacred_mongo_fail_{run_id}_")
    dump = json_util.loads(path.read_text())
    assert dump["reason"] == "ServerSelectionTimeoutError: gone" and dump["database"] == "sacred"
    run = dump["run"]
    assert run["_id"] == run_id and run["status"] == "COMPLETED" and run["result"] == 3
    assert run["stop_time"] == NOW and run["captured_out"] == "before\nafter\n" and run["info"]["epoch"] == 2
    assert dump["pending_metrics"]["m"]["steps"] == [0, 1]
    assert [item[0:2] for item in dump["pending_files"]] == [["resource", str(resource)]]
    # Nothing went to MongoDB: it still holds the run as the last delivered beat left it.
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "RUNNING" and doc["captured_out"] == "before\n" and doc["resources"] == []
    assert db.metrics.count_documents({}) == 0
    # Holding writes back lasted for the call only.
    observer.log_metrics({"m": {"steps": [2], "values": [1.5], "timestamps": [NOW]}}, {})
    assert db.metrics.find_one({"run_id": run_id})["steps"] == [0, 1, 2]


def test_the_queue_meets_the_observer_through_public_names_only(server: MongoWireServer) -> None:
    queued = QueuedMongoObserver(url=server.uri, join_timeout=3.0)
    covered = queued.covered_observer
    assert isinstance(covered, MongoObserver) and queued.priority == 30
    assert covered.save_on_final_failure is False and covered.final_save_timeout == 0
    assert MongoObserver(url=server.uri).save_on_final_failure is True
    assert not hasattr(covered, "_dump_on_final_failure")
    root = Path(prefect_sacred.__file__).parent
    wing = root / "observers" / "mongo"
    private = re.compile(r"\._(?:offline|writes_held|dump_on_final_failure)\b|\bdump_on_final_failure\b")
    offenders = [
        f"{path}:{number}"
        for folder in (root, root.parent / "benchmarks", root.parent / "tests")
        for path in folder.rglob("*.py")
        if wing not in path.parents and path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []


def test_a_copied_queued_observer_has_its_own_queue_and_observer(server: MongoWireServer) -> None:
    queued = QueuedMongoObserver(url=server.uri, retry_interval=0.5, join_timeout=3.0, db_name="copies")
    other = copy.copy(queued)
    covered: Any = other.covered_observer
    assert type(other) is QueuedMongoObserver and covered is not queued.covered_observer
    assert covered.runs.full_name == "copies.runs" and other.priority == 30
    assert (other.retry_interval, other.join_timeout) == (0.5, 3.0)
    assert covered.save_on_final_failure is False


def test_importing_the_wing_registers_it_and_imports_no_driver() -> None:
    code = (
        "import sys, prefect_sacred.observers.mongo as wing\n"
        "from prefect_sacred.observers import registry\n"
        "def heavy():\n"
        "    roots = {'pymongo', 'gridfs', 'bson', 'numpy', 'pandas', 'prefect'}\n"
        "    return sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "schemes = {'mongodb', 'mongodb+srv'} <= set(registry._schemes)\n"
        "print(heavy(), '--mongo_db' in registry._options, schemes)\n"
        "names = [getattr(wing, name) for name in wing.__all__]\n"
        "print(heavy())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["[] True True", "[]"]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_an_artifact_name_leaving_the_run_is_refused(
    server: MongoWireServer, db: Any, tmp_path: Path, name: str
) -> None:
    observer = MongoObserver(url=server.uri)
    run_id = start(observer, tmp_path)
    data = tmp_path / "data.txt"
    data.write_text("x")
    with pytest.raises(InvalidArtifactName):
        observer.artifact_event(name=name, filename=str(data))
    observer.artifact_event(name="plots/ok.txt", filename=str(data))
    assert [a["name"] for a in db.runs.find_one({"_id": run_id})["artifacts"]] == ["plots/ok.txt"]


def test_a_fail_trace_given_as_a_string_is_stored_as_one_line(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    """A string is one element of the list, not a list of characters."""
    trace = "lots of errors and\nso\non..."
    for given, stored in [(trace, [trace]), ([trace], [trace]), (("a\n", "b\n"), ["a\n", "b\n"])]:
        observer = MongoObserver(url=server.uri)
        run_id = start(observer, tmp_path)
        observer.failed_event(fail_time=NOW, fail_trace=given)  # type: ignore[arg-type]
        assert db.runs.find_one({"_id": run_id})["fail_trace"] == stored


def test_create_refuses_a_client_that_is_not_a_mongo_client(server: MongoWireServer) -> None:
    """As Sacred's: a pymongo ``MongoClient`` or mongomock's, the documented test double."""
    import mongomock

    for observer_class in (MongoObserver, QueuedMongoObserver):
        for client in ("mongodb://localhost", object(), pymongo.MongoClient(server.uri)["sacred"]):
            with pytest.raises(ValueError, match=r"client needs to be a pymongo\.MongoClient"):
                observer_class.create(client=client)
    with pytest.warns(DeprecationWarning, match=r"MongoObserver\.create\(\.\.\.\) is deprecated"):
        observer = MongoObserver.create(client=pymongo.MongoClient(server.uri), db_name="given")
    assert observer.runs.full_name == "given.runs"
    with pytest.warns(DeprecationWarning, match=r"QueuedMongoObserver\.create\(\.\.\.\) is deprecated"):
        queued = QueuedMongoObserver.create(client=pymongo.MongoClient(server.uri), join_timeout=1.0)
    assert queued.covered_observer.runs.full_name == "sacred.runs"  # type: ignore[attr-defined]
    assert MongoObserver(client=mongomock.MongoClient(), db_name="mocked").runs.full_name == "mocked.runs"


def test_observers_on_one_runs_collection_compare_and_hash_equal(server: MongoWireServer) -> None:
    """As Sacred's: "is this observer attached already" checks in users' code keep working."""
    first = MongoObserver(url=server.uri)
    second = MongoObserver.create_from(first.runs, first.fs)
    assert first == second and hash(first) == hash(second)
    assert not first != second  # noqa: SIM202 (Sacred's tests check __ne__ too)
    assert second in [first] and len({first, second}) == 1
    assert first != MongoObserver(url=server.uri, collection_prefix="other") and first != "foo"
