"""The test MongoDB (wire server and in-process mongomock) with every pymongo the extra admits.

pymongo 4.11+ sends a ``sort`` with updates and replaces of one document, and passes ``sort=``
to mongomock's bulk builder for every ``UpdateOne``/``ReplaceOne``, which mongomock 4.3 rejects.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gridfs
import mongomock
import pymongo
import pytest
from pymongo import ReplaceOne, UpdateOne

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.mongo import MongoObserver, read_captured_out, read_metric
from tests.servers.mongo_wire import MongoWireServer

NOW = dt.datetime(2024, 5, 6, 7, 8, 9)
needs_sort = pytest.mark.skipif(
    "sort" not in inspect.signature(UpdateOne).parameters, reason="pymongo < 4.11 has no sort on updates"
)


@pytest.fixture()
def server() -> Iterator[MongoWireServer]:
    with MongoWireServer() as wire:
        yield wire


def _sorted_writes(collection: Any) -> None:
    collection.insert_many([{"_id": 1, "k": "a"}, {"_id": 2, "k": "a"}, {"_id": 3, "k": "b"}])
    collection.bulk_write(
        [
            UpdateOne({"k": "a"}, {"$set": {"hit": 1}}, sort={"_id": -1}),
            ReplaceOne({"k": "a"}, {"k": "a", "replaced": True}, sort={"_id": 1}),
            UpdateOne({"k": "z"}, {"$set": {"new": 1}}, upsert=True, sort={"_id": 1}),
            UpdateOne({"k": "b"}, {"$set": {"plain": 1}}),  # no sort: pymongo still passes sort=None
        ]
    )
    collection.update_one({"k": "a"}, {"$set": {"last": 1}}, sort={"_id": -1})


def _expected(collection: Any) -> None:
    docs = {doc["_id"]: doc for doc in collection.find({"_id": {"$in": [1, 2, 3]}})}
    assert docs[1] == {"_id": 1, "k": "a", "replaced": True}
    assert docs[2] == {"_id": 2, "k": "a", "hit": 1, "last": 1}
    assert docs[3] == {"_id": 3, "k": "b", "plain": 1}
    assert collection.find_one({"k": "z"}, {"_id": 0}) == {"k": "z", "new": 1}


@needs_sort
def test_the_wire_server_changes_the_first_document_in_the_sort_order(server: MongoWireServer) -> None:
    collection: Any = pymongo.MongoClient(server.uri)["sorting"]["c"]
    _sorted_writes(collection)
    _expected(collection)


@needs_sort
def test_in_process_mongomock_takes_the_sort_of_bulk_writes() -> None:
    collection: Any = mongomock.MongoClient()["sorting"]["c"]
    _sorted_writes(collection)
    _expected(collection)


def test_an_observer_on_in_process_mongomock_writes_metrics_and_output_chunks(tmp_path: Path) -> None:
    # Metric points and GridFS chunks go out in bulk_write: UpdateOne and ReplaceOne.
    database: Any = mongomock.MongoClient()["sacred"]
    observer = MongoObserver.create_from(
        database.runs, gridfs.GridFS(database), metrics_collection=database.metrics
    )
    observer.captured_out_limit = 20_000
    run_id = observer.started_event(
        ex_info={"name": "exp", "base_dir": str(tmp_path), "sources": []},
        command="main",
        host_info={},
        start_time=NOW,
        config={},
        meta_info={},
        _id=None,
    )
    out = "y" * 50_000 + "\n"
    observer.log_metrics({"m": {"steps": [0, 1], "values": [1, 2], "timestamps": [NOW, NOW]}}, {})
    delta = OutputDelta(0, out)
    observer.heartbeat_event(info={}, captured_out=out, beat_time=NOW, result=None, output_delta=delta)
    observer.completed_event(stop_time=NOW, result=1)
    doc = database.runs.find_one({"_id": run_id})
    assert doc["status"] == "COMPLETED" and read_captured_out(database, doc) == out
    assert gridfs.GridFS(database).get(doc["captured_out_file"]).read().decode() == out
    assert read_metric(database.metrics, database.metrics_chunks, run_id, "m")["values"] == [1, 2]
