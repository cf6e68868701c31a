"""Every contract backend at once: the servers of all eight, one observer each on the same runs,
and the runs each one holds read back with its own reader.

Used where one run must reach all eight backends together (``PREFECT_SACRED_OBSERVERS`` naming
them all, or a sweep whose observers list them all): ``started`` starts them (the session's
``every_backend`` fixture in tests/conftest.py), ``Fresh`` gives each a fresh namespace and
lists the runs each got since, ``assert_trials_apart`` checks a sweep's trials in each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pytest import approx

from prefect_sacred.observers.base import RunObserver
from tests.backends import Backend, BackendUnavailable, RunRecord, load_backends
from tests.support import service_missing


@contextmanager
def started(tmp_path_factory: Any) -> Iterator[list[Backend]]:
    """All eight contract backends started (a missing server: a skip, a failure under CI=true).

    S3's start sets the moto credentials in ``os.environ``: start the backends before worker
    processes (a Dask cluster, a Ray) that must inherit them.
    """
    running: list[Backend] = []
    try:
        for backend in load_backends():
            try:
                backend.start(tmp_path_factory)
            except BackendUnavailable as exc:
                service_missing(f"{backend.name}: {exc}")
            running.append(backend)
        yield running
    finally:
        for backend in running:
            backend.stop()


class Fresh:
    """One observer per backend, each in a new namespace (the one ``url()`` and ``record()``
    then use), and the runs each backend holds since.

    The SQL backends keep one database for the session, and a SqlObserver (priority 40) picks
    the ids the others take: the runs there before are left out, and ids need not start at 1.
    """

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self.observers: list[RunObserver] = [backend.observer() for backend in backends]
        self._before = {backend.name: set(backend.run_ids()) for backend in backends}

    def run_ids(self, backend: Backend) -> list[str]:
        """The ids of the runs ``backend`` got since, as stored (a duplicate stays one)."""
        return [run_id for run_id in backend.run_ids() if run_id not in self._before[backend.name]]

    def records(self, backend: Backend) -> dict[str, RunRecord]:
        """The runs ``backend`` got since, by id, read back with its own reader."""
        ids = self.run_ids(backend)
        assert len(set(ids)) == len(ids), f"{backend.name} holds an id twice: {sorted(ids)}"
        return {run_id: backend.record(run_id) for run_id in ids}


def assert_trials_apart(
    fresh: Fresh,
    lrs: list[float],
    task_name: str,
    printed: Callable[[float, int], str],
    parent_pid: int,
) -> None:
    """Per backend, the trials of the sweep of ``task_name`` over ``lrs`` (a trial logs ``loss``
    = lr * (step + 1) and prints ``printed(lr, step)`` for steps 0-2, puts its pid in ``info``,
    returns lr * 2): one COMPLETED record per trial under distinct ids, each with its own
    config, output, metrics and result and nothing of another trial's, recorded by a process
    other than ``parent_pid``; and an id names the same trial in every backend."""
    trial_of_id: dict[str, float] = {}
    for backend in fresh.backends:
        held = fresh.records(backend)
        name = backend.name
        assert len(held) == len(lrs), (name, sorted(held))
        assert sorted(record.config["lr"] for record in held.values()) == sorted(lrs), name
        for run_id, record in held.items():
            lr = record.config["lr"]
            assert trial_of_id.setdefault(run_id, lr) == lr, (name, run_id)
            assert record.status == "COMPLETED", (name, run_id, record.status)
            assert record.meta["config_updates"] == {"lr": lr}, name
            assert record.meta["sweep"]["task_name"] == task_name, name
            assert record.result == approx(lr * 2), name
            lines = [line for line in record.captured_out.splitlines() if line]
            assert lines == [printed(lr, step) for step in range(3)], (name, record.captured_out)
            assert set(record.metrics) == {"loss"}, (name, record.metrics)
            assert record.metrics["loss"]["steps"] == [0, 1, 2], name
            assert record.metrics["loss"]["values"] == approx([lr, 2 * lr, 3 * lr]), name
            info = {key: value for key, value in record.info.items() if key != "metrics"}  # Mongo's links
            assert set(info) == {"pid"} and info["pid"] != parent_pid, (name, record.info)
