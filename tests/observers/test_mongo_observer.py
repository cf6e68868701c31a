"""MongoObserver: Sacred's format over the wire server, and each improvement over Sacred."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gridfs
import pymongo
import pytest
from bson import json_util

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.mongo import MongoObserver, MongoWriteError, read_captured_out, read_metric
from tests.servers.mongo_wire import MongoWireServer

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)


@pytest.fixture()
def server() -> Iterator[MongoWireServer]:
    with MongoWireServer() as wire:
        yield wire


@pytest.fixture()
def db(server: MongoWireServer) -> Any:
    return pymongo.MongoClient(server.uri)["sacred"]


def ex_info(tmp_path: Path, name: str = "main.py", text: str = "print(1)\n") -> dict[str, Any]:
    (tmp_path / name).write_text(text)
    import hashlib

    return {
        "name": "exp",
        "base_dir": str(tmp_path),
        "sources": [(name, hashlib.md5(text.encode()).hexdigest())],
        "dependencies": ["numpy==1"],
        "repositories": [],
        "mainfile": name,
    }


def start(observer: MongoObserver, tmp_path: Path, _id: Any = None, config: Any = None) -> Any:
    return observer.started_event(
        ex_info=ex_info(tmp_path),
        command="main",
        host_info={"hostname": "h"},
        start_time=NOW,
        config=config or {"lr": 0.1},
        meta_info={"comment": "c"},
        _id=_id,
    )


def beat(observer: MongoObserver, out: str, start: int, info: Any = None, result: Any = None) -> int:
    """A heartbeat as the run sends it: ``out`` is the first ``start`` characters of the previous
    beat's output and then new ones. Returns ``len(out)``, the next beat's ``start``."""
    delta = OutputDelta(start, out[start:])
    observer.heartbeat_event(
        info=info or {}, captured_out=out, beat_time=NOW, result=result, output_delta=delta
    )
    return len(out)


def metric(name: str, steps: list[int]) -> dict[str, Any]:
    return {
        name: {
            "name": name,
            "steps": steps,
            "values": [s / 2 for s in steps],
            "timestamps": [NOW] * len(steps),
        }
    }


def test_started_document_is_sacreds_and_updates_keep_other_tools_fields(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    observer = MongoObserver(url=server.uri)
    run_id = start(observer, tmp_path)
    doc = db.runs.find_one({"_id": run_id})
    assert run_id == 1 and isinstance(doc["_id"], int)
    assert set(doc) == {
        "_id",
        "experiment",
        "format",
        "command",
        "host",
        "start_time",
        "config",
        "meta",
        "status",
        "resources",
        "artifacts",
        "captured_out",
        "info",
        "heartbeat",
    }
    assert doc["format"] == "MongoObserver-0.7.0" and doc["status"] == "RUNNING"
    assert doc["start_time"] == NOW and doc["start_time"].tzinfo is None
    assert doc["heartbeat"] is None and doc["info"] == {} and doc["captured_out"] == ""
    [[relpath, file_id]] = doc["experiment"]["sources"]
    assert relpath == "main.py" and gridfs.GridFS(db).get(file_id).read() == b"print(1)\n"
    db.runs.update_one({"_id": run_id}, {"$set": {"omniboard": {"tags": ["keep"]}}})

    observer.log_metrics(metric("loss", [0, 1]), {})
    observer.heartbeat_event(info={"a": 1}, captured_out="out\n", beat_time=NOW, result=0.5)
    observer.log_metrics(metric("loss", [2]), {})
    observer.failed_event(fail_time=NOW, fail_trace=["Traceback\n", "ValueError: x\n"])
    doc = db.runs.find_one({"_id": run_id})
    assert doc["omniboard"] == {"tags": ["keep"]}
    assert doc["status"] == "FAILED" and doc["fail_trace"] == ["Traceback\n", "ValueError: x\n"]
    assert doc["stop_time"] == NOW and doc["captured_out"] == "out\n" and doc["result"] == 0.5
    [ref] = doc["info"]["metrics"]
    metric_doc = db.metrics.find_one({"_id": pymongo.collection.ObjectId(ref["id"])})
    assert ref["name"] == "loss" and metric_doc["run_id"] == run_id and metric_doc["name"] == "loss"
    assert metric_doc["steps"] == [0, 1, 2] and metric_doc["values"] == [0, 0.5, 1]
    assert set(metric_doc) == {"_id", "run_id", "name", "steps", "values", "timestamps"}


def test_artifacts_and_resources_in_gridfs_deduplicated_by_md5(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n")
    for _ in range(2):  # two runs with the same sources and resource
        observer = MongoObserver(url=server.uri)
        run_id = start(observer, tmp_path)
        observer.resource_event(filename=str(data))
        observer.resource_event(filename=str(data))
        observer.artifact_event(name="plot.png", filename=str(data), metadata={"k": 1})
        observer.completed_event(stop_time=NOW, result=None)
    doc = db.runs.find_one({"_id": run_id})
    import hashlib

    assert doc["resources"] == [[str(data), hashlib.md5(b"a,b\n").hexdigest()]]
    assert db["fs.files"].count_documents({"filename": str(data)}) == 1
    assert db["fs.files"].count_documents({"filename": str(tmp_path / "main.py")}) == 1
    [artifact] = doc["artifacts"]
    stored = db["fs.files"].find_one({"_id": artifact["file_id"]})
    assert stored["filename"] == f"artifact://runs/{run_id}/plot.png"
    # Like Sacred, the content type is guessed from the file, not from the artifact's name.
    assert stored["contentType"] == "text/csv" and stored["metadata"] == {"k": 1}


def test_fifty_concurrent_starts_get_distinct_ids_and_string_ids_do_not_break_counting(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    start(MongoObserver(url=server.uri), tmp_path, _id="abc")
    ids: list[Any] = []
    barrier = threading.Barrier(50)

    def one() -> None:
        observer = MongoObserver(url=server.uri)
        barrier.wait()
        ids.append(start(observer, tmp_path))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 51))
    assert start(MongoObserver(url=server.uri), tmp_path) == 51
    assert db.runs.count_documents({}) == 52


def test_keys_mongodb_rejects_are_renamed_before_writing(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    observer = MongoObserver(url=server.uri)
    run_id = start(observer, tmp_path, config={"opt": {"a.b": 1, "$set": 2}})
    observer.heartbeat_event(
        info={"x.y": {"$z": 1}, 12.7: "n"}, captured_out="", beat_time=NOW, result={"r.s": 1}
    )
    doc = db.runs.find_one({"_id": run_id})
    assert doc["config"]["opt"] == {"a,b": 1, "@set": 2}
    assert doc["info"]["x,y"] == {"@z": 1} and doc["result"] == {"r,s": 1}


def test_document_stays_under_16_mb_and_the_whole_output_is_in_gridfs(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    observer = MongoObserver(url=server.uri)
    run_id = start(observer, tmp_path)
    line = "x" * 99 + "\n"
    out, shown = "", 0
    for _ in range(20):  # 20 MB of output and a 17 MB info value
        out += line * 10_000
        shown = beat(observer, out, shown, info={"blob": "i" * (17 * 2**20), "small": 1})
    out += "the end\n"
    beat(observer, out, shown, info={"small": 2})
    observer.completed_event(stop_time=NOW, result="r" * (5 * 2**20))
    doc = db.runs.find_one({"_id": run_id})
    import bson

    assert len(bson.encode(doc)) < 16 * 2**20
    assert doc["captured_out"].endswith("the end\n") and len(doc["captured_out"]) < 300_000
    assert gridfs.GridFS(db).get(doc["captured_out_file"]).read().decode() == out
    assert doc["info"]["small"] == 2
    assert doc["result"]["spilled_to_gridfs"] == f"result://runs/{run_id}"
    assert json_util.loads(gridfs.GridFS(db).get(doc["result"]["file_id"]).read()) == "r" * (5 * 2**20)


def test_output_is_appended_by_whole_chunks_and_reads_back_whole_at_every_stage(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    observer = MongoObserver(url=server.uri, captured_out_limit=20_000)  # chunks of 20,000 bytes
    run_id = start(observer, tmp_path)
    out, files, shown = "", set(), 0
    for step in range(12):
        out += f"step {step} ünïcødé €\n" * 700  # 2- and 3-byte characters: chunks cut some
        if step == 8:  # a captured_out_filter rewrote earlier output: the file is written anew
            out, shown = "rewritten\n" + out, 0
        shown = beat(observer, out, shown)
        doc = db.runs.find_one({"_id": run_id})
        assert read_captured_out(db, doc) == out
        assert len(doc["captured_out"]) < 20_000 + 100 and doc["captured_out"].endswith(out[-20_000:])
        if step == 0:  # still all in the document
            assert len(out) < 20_000 and "captured_out_file" not in doc
            continue
        stored = db["fs.files"].find_one({"_id": doc["captured_out_file"]})
        assert stored["length"] % stored["chunkSize"] == 0  # the chunk being filled is not sent
        files.add(doc["captured_out_file"])
    observer.completed_event(stop_time=NOW, result=None)
    doc = db.runs.find_one({"_id": run_id})
    assert gridfs.GridFS(db).get(doc["captured_out_file"]).read().decode() == out  # now complete
    assert read_captured_out(db, doc) == out
    assert len(files) == 2 and db["fs.files"].count_documents({"_id": {"$in": list(files)}}) == 1


def test_output_survives_an_outage_and_a_reattach(server: MongoWireServer, db: Any, tmp_path: Path) -> None:
    observer = MongoObserver(url=server.uri, captured_out_limit=20_000, serverSelectionTimeoutMS=1500)
    run_id = start(observer, tmp_path)
    out, shown = "", 0
    for step in range(3):
        out += f"before {step} €\n" * 3000
        shown = beat(observer, out, shown)
    server.stop()
    out += "during the outage\n" * 3000
    with pytest.raises(pymongo.errors.PyMongoError):
        beat(observer, out, shown)
    shown = len(out)  # the run moves on: the next delta continues this beat's output
    server.start()
    out += "after\n" * 100
    beat(observer, out, shown)
    doc = db.runs.find_one({"_id": run_id})
    assert read_captured_out(db, doc) == out
    assert gridfs.GridFS(db).get(doc["captured_out_file"]).length < len(out.encode())
    # The process dies with the unfinished chunk in memory; another one records the end.
    other = MongoObserver(url=server.uri)
    assert other.reattach(run_id)
    other.failed_event(fail_time=NOW, fail_trace=["killed\n"])
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "FAILED" and read_captured_out(db, doc) == out
    assert gridfs.GridFS(db).get(doc["captured_out_file"]).read().decode() == out


@pytest.mark.parametrize("with_delta", [True, False])
def test_a_heartbeat_does_not_keep_the_callers_output_alive(
    server: MongoWireServer, tmp_path: Path, with_delta: bool
) -> None:
    # Holding it would make the run copy its whole output on its next append, on every beat.
    observer = MongoObserver(url=server.uri, captured_out_limit=20_000)
    start(observer, tmp_path)
    out = "x" * 50_000
    first = OutputDelta(0, out) if with_delta else None  # the first delta's text is the output itself
    before = sys.getrefcount(out)
    observer.heartbeat_event(info={}, captured_out=out, beat_time=NOW, result=None, output_delta=first)
    assert sys.getrefcount(out) == before
    out = out + "y" * 1000
    second = OutputDelta(50_000, out[50_000:]) if with_delta else None
    before = sys.getrefcount(out)
    observer.heartbeat_event(info={}, captured_out=out, beat_time=NOW, result=None, output_delta=second)
    assert sys.getrefcount(out) == before


def test_a_metric_with_many_points_loses_none(server: MongoWireServer, db: Any, tmp_path: Path) -> None:
    observer = MongoObserver(url=server.uri, metrics_chunk_points=1000)
    run_id = start(observer, tmp_path)
    steps = list(range(5500))
    for begin in range(0, 5500, 700):
        observer.log_metrics(metric("acc", steps[begin : begin + 700]), {})
        observer.heartbeat_event(info={}, captured_out="", beat_time=NOW, result=None)
    observer.completed_event(stop_time=NOW, result=None)
    main = db.metrics.find_one({"run_id": run_id, "name": "acc"})
    assert len(main["values"]) <= 1000 and main["steps"][-1] == 5499  # Omniboard sees the latest
    full = read_metric(db.metrics, db.metrics_chunks, run_id, "acc")
    assert full["steps"] == steps and full["values"] == [s / 2 for s in steps]


def test_unreachable_server_fails_the_start_quickly_without_the_password(tmp_path: Path) -> None:
    from tests.support import free_port

    url = f"mongodb://alice:s3cret@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=700"
    observer = MongoObserver(url=url)
    began = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        start(observer, tmp_path)
    assert time.monotonic() - began < 5
    assert "s3cret" not in str(
        caught.value
    ) and "cannot reach MongoDB at mongodb://alice:***@127.0.0.1" in str(caught.value)
    assert "s3cret" not in (observer.run_location() or "")


def test_failed_heartbeat_is_retried_with_full_state_and_no_metric_is_lost(
    server: MongoWireServer, db: Any, tmp_path: Path
) -> None:
    # Above pymongo's 0.5 s minimum heartbeat, so the restarted server is found again in time.
    observer = MongoObserver(url=server.uri, serverSelectionTimeoutMS=1500)
    run_id = start(observer, tmp_path)
    observer.log_metrics(metric("m", [0]), {})
    server.stop()
    with pytest.raises(pymongo.errors.PyMongoError):
        observer.log_metrics(metric("m", [1, 2]), {})
    with pytest.raises(pymongo.errors.PyMongoError):
        observer.heartbeat_event(
            info={"epoch": 1}, captured_out="during outage\n", beat_time=NOW, result=None
        )
    server.start()
    observer.log_metrics(metric("m", [3]), {})
    observer.heartbeat_event(
        info={"epoch": 2}, captured_out="during outage\nafter\n", beat_time=NOW, result=1
    )
    doc = db.runs.find_one({"_id": run_id})
    assert (
        doc["info"]["epoch"] == 2 and doc["captured_out"] == "during outage\nafter\n" and doc["result"] == 1
    )
    assert read_metric(db.metrics, db.metrics_chunks, run_id, "m")["steps"] == [0, 1, 2, 3]


def test_final_write_failure_dumps_the_run_and_says_where(server: MongoWireServer, tmp_path: Path) -> None:
    observer = MongoObserver(
        url=server.uri,
        serverSelectionTimeoutMS=200,
        final_save_timeout=0.5,
        failure_dir=tmp_path / "failures",
    )
    run_id = start(observer, tmp_path)
    observer.heartbeat_event(info={"a": 1}, captured_out="all of it\n", beat_time=NOW, result=None)
    server.stop()
    with pytest.raises(MongoWriteError) as caught:
        observer.completed_event(stop_time=NOW, result=3)
    [path] = list((tmp_path / "failures").iterdir())
    assert str(path) in str(caught.value) and path.name.startswith(f"sacred_mongo_fail_{run_id}_")
    dump = json_util.loads(path.read_text())
    assert dump["run"]["status"] == "COMPLETED" and dump["run"]["result"] == 3
    assert dump["run"]["captured_out"] == "all of it\n"


def test_reattach_finishes_a_run_started_elsewhere(server: MongoWireServer, db: Any, tmp_path: Path) -> None:
    run_id = start(MongoObserver(url=server.uri), tmp_path)
    db.runs.update_one({"_id": run_id}, {"$set": {"omniboard": {"notes": "n"}}})
    other = MongoObserver(url=server.uri)
    assert other.reattach(str(run_id))  # ids come back from Prefect labels as text
    other.interrupted_event(interrupt_time=NOW, status="INTERRUPTED")
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "INTERRUPTED" and doc["omniboard"] == {"notes": "n"}
    assert not MongoObserver(url=server.uri).reattach(run_id)
    assert not MongoObserver(url=server.uri).reattach(999)
    assert other.run_location() == f"mongodb://127.0.0.1:{server.port}/sacred.runs/{run_id}"


def test_queued_run_keeps_its_id_when_it_starts(server: MongoWireServer, db: Any, tmp_path: Path) -> None:
    observer = MongoObserver(url=server.uri)
    run_id = observer.queued_event(
        ex_info=ex_info(tmp_path),
        command="main",
        host_info={},
        queue_time=NOW,
        config={"lr": 1},
        meta_info={},
        _id=None,
    )
    assert db.runs.find_one({"_id": run_id})["status"] == "QUEUED"
    assert start(MongoObserver(url=server.uri), tmp_path, _id=run_id) == run_id
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "RUNNING" and doc["meta"]["queue_time"] == NOW
