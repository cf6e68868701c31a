"""The delivery rule, for every storage observer: an event that returned is stored; one that
raised stored nothing a retry would duplicate, so the delivery worker can send it again.

Each test starts a run on a real backend, makes one write fail (before it reached the backend,
or after the backend applied it and before the observer heard back), sends the failed event
again as the delivery worker does, finishes the run and reads it back: every point once, in
order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prefect_sacred.core.metrics import linearize_metrics
from tests.backends import Backend, BackendUnavailable
from tests.backends.file_storage import FileStorageBackend
from tests.backends.mongo import MongoBackend
from tests.backends.s3 import S3Backend
from tests.backends.sql import SqliteBackend
from tests.backends.tinydb import TinyDbBackend
from tests.support import service_missing

T0 = dt.datetime(2024, 1, 2, 3, 4, 5)
EX_INFO = {"name": "delivery", "base_dir": "/tmp", "sources": [], "dependencies": []}


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    backends: dict[str, Backend] = {}
    for backend in (FileStorageBackend(), SqliteBackend(), TinyDbBackend(), MongoBackend(), S3Backend()):
        try:
            backend.start(tmp_path_factory)
        except BackendUnavailable as exc:
            service_missing(f"{backend.name}: {exc}")
        backends[backend.name] = backend
    yield backends
    for backend in backends.values():
        backend.stop()


def batch(first: int, count: int = 3) -> dict[str, dict[str, list[Any]]]:
    """One beat's points of two metrics, steps ``first`` .. ``first + count - 1``."""
    entries = [
        (name, step, step / 10, 1_700_000_000.0 + step)
        for step in range(first, first + count)
        for name in ("loss", "acc")
    ]
    return linearize_metrics(entries)


class FailsOnce:
    """Wraps a write: the first call fails before (``applied=False``) or after calling it."""

    def __init__(self, write: Callable[..., Any], applied: bool, error: type[Exception] = OSError) -> None:
        self.write, self.applied, self.error = write, applied, error
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return self.write(*args, **kwargs)
        if self.applied:
            self.write(*args, **kwargs)
            raise self.error("the connection dropped before the reply")
        raise self.error("the backend is away")


def run_with_one_failure(backend: Backend, arm: Callable[[Any], FailsOnce]) -> Any:
    """Start, three batches (the second fails once and is sent again), a beat, complete."""
    observer = backend.observer()
    run_id = observer.started_event(
        ex_info=EX_INFO,
        command="main",
        host_info={},
        start_time=T0,
        config={"lr": 0.1},
        meta_info={},
        _id=None,
    )
    observer.log_metrics(metrics_by_name=batch(0), info={})
    failing = arm(observer)
    second = batch(3)
    with pytest.raises(Exception, match=r"the backend is away|before the reply"):
        observer.log_metrics(metrics_by_name=second, info={})
    assert failing.calls == 1
    observer.log_metrics(metrics_by_name=second, info={})  # the delivery worker's retry
    observer.log_metrics(metrics_by_name=batch(6), info={})
    observer.heartbeat_event(info={"epoch": 9}, captured_out="", beat_time=T0, result=None)
    observer.completed_event(stop_time=T0, result=1.0)
    record = backend.record(run_id)
    assert record.status == "COMPLETED"
    for name in ("loss", "acc"):
        assert record.metrics[name]["steps"] == list(range(9)), name
        assert record.metrics[name]["values"] == pytest.approx([step / 10 for step in range(9)]), name
    return observer


class _HalfWriter:
    """The journal's unbuffered file; its first write stores half the data, then fails."""

    def __init__(self, handle: Any, failing: FailsOnce) -> None:
        self.handle, self.failing = handle, failing

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()

    def seek(self, *args: Any) -> int:
        return int(self.handle.seek(*args))

    def write(self, data: Any) -> Any:
        if self.failing.calls == 0:
            self.handle.write(bytes(data)[: len(data) // 2])  # the disk filled up mid-line
        return self.failing(data)


@pytest.fixture
def journal_fails_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], FailsOnce]:
    """FileStorage's and TinyDB's metrics journal: the next append fails once, half written."""
    from prefect_sacred.observers import metrics_log

    def arm(observer: Any) -> FailsOnce:
        current: dict[str, Any] = {}
        failing = FailsOnce(lambda data: current["handle"].write(data), applied=False)

        def opener(path: str, mode: str = "r", **kwargs: Any) -> Any:
            if mode != "ab":  # reading the journal back
                return open(path, mode, **kwargs)
            current["handle"] = open(path, mode, **kwargs)  # noqa: SIM115 (closed by _HalfWriter)
            return _HalfWriter(current["handle"], failing)

        monkeypatch.setattr(metrics_log, "open", opener, raising=False)
        return failing

    return arm


@pytest.mark.parametrize("name", ["file_storage", "tinydb"])
def test_a_journal_append_that_fails_part_way_is_retried_without_doubling(
    started: dict[str, Backend], name: str, journal_fails_once: Callable[[Any], FailsOnce]
) -> None:
    run_with_one_failure(started[name], journal_fails_once)


@pytest.mark.parametrize("applied", [False, True], ids=["before-the-insert", "inside-the-transaction"])
def test_sql_metrics_are_written_by_log_metrics_and_a_failed_one_rolls_back(
    started: dict[str, Backend], monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    """Before: points waited in ``SqlObserver._pending`` after ``log_metrics`` returned."""
    from prefect_sacred.observers.sql import metrics

    def arm(observer: Any) -> FailsOnce:
        failing = FailsOnce(metrics.insert_metrics, applied=applied)
        monkeypatch.setattr(metrics, "insert_metrics", failing)
        return failing

    observer = run_with_one_failure(started["sql_sqlite"], arm)
    assert not hasattr(observer, "_pending")


def test_sql_log_metrics_that_returned_has_stored_its_points(started: dict[str, Backend]) -> None:
    backend = started["sql_sqlite"]
    observer = backend.observer()
    run_id = observer.started_event(
        ex_info=EX_INFO, command="main", host_info={}, start_time=T0, config={}, meta_info={}, _id=None
    )
    observer.log_metrics(metrics_by_name=batch(0), info={})
    assert backend.record(run_id).metrics["loss"]["steps"] == [0, 1, 2]  # no heartbeat needed


@pytest.mark.parametrize("applied", [False, True], ids=["not-applied", "applied-reply-lost"])
def test_a_mongo_metrics_write_in_doubt_is_settled_before_the_retry(
    started: dict[str, Backend], applied: bool
) -> None:
    from pymongo.errors import AutoReconnect

    def arm(observer: Any) -> FailsOnce:
        writer = observer._writer
        failing = FailsOnce(writer.metrics.bulk_write, applied=applied, error=AutoReconnect)

        class Collection:
            def __getattr__(self, attribute: str) -> Any:
                return failing if attribute == "bulk_write" else getattr(failing_target, attribute)

        failing_target = writer.metrics
        writer.metrics = Collection()
        return failing

    run_with_one_failure(started["mongo"], arm)


def test_an_object_store_upload_that_fails_keeps_no_point_for_the_retry_to_double(
    started: dict[str, Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    def arm(observer: Any) -> FailsOnce:
        store = observer._metrics.store
        real_put, real_upload = store.put, store.upload_file
        failing = FailsOnce(lambda write, *args: write(*args), applied=False)
        monkeypatch.setattr(store, "put", lambda *args: failing(real_put, *args))
        monkeypatch.setattr(store, "upload_file", lambda *args: failing(real_upload, *args))
        return failing

    run_with_one_failure(started["s3"], arm)
