"""Queued runs in every contract backend, for real: one served experiment whose
``PREFECT_SACRED_OBSERVERS`` names all eight backends, with a daily schedule whose first run is
due in seconds and a run created through the client for a few seconds later (``--start-in``'s
state). Each is recorded QUEUED before it starts, in every backend, and the same record becomes
COMPLETED."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Backend, every
from tests.support import wait_for
from tests.test_queue_runs import Setup, deployment_id


def _flow_run_of(record: Any) -> str | None:
    prefect = (record.meta or {}).get("prefect") or {}
    return prefect.get("flow_run_id")


def _read(backend: Backend, runs: list[tuple[Any, Any]], status: str, timeout: float) -> list[Any]:
    """The records of ``runs`` in ``backend`` once all are ``status`` (QUEUED: once all exist)."""

    def records() -> list[Any] | None:
        found = [backend.record(run_id) for _, run_id in runs]
        return found if status == "QUEUED" or all(each.status == status for each in found) else None

    return wait_for(records, timeout=timeout, interval=0.3, what=f"{status} runs in {backend.name}")


@pytest.mark.slow
def test_a_scheduled_run_and_a_client_run_are_queued_then_completed_in_every_backend(
    tmp_path: Path, every_backend: list[Backend]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Scheduled

    # Both runs are due in an hour, and are moved to now once every backend showed them
    # QUEUED: no race between the watcher and the runner, however loaded the machine is.
    first_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    fresh = every.Fresh(every_backend)  # new namespaces: the ones url() names and record() reads
    setup = Setup(
        tmp_path,
        observers=" ".join(backend.url() for backend in every_backend),
        TEST_FIRST_RUN_AT=first_at.isoformat(),
    )
    files = next(backend for backend in every_backend if backend.name == "file_storage")
    with setup.serving("serve-daily"), get_client(sync_client=True) as client:
        deployment = wait_for(lambda: deployment_id(setup.name), timeout=60, what="the served deployment")
        created = client.create_flow_run_from_deployment(
            deployment, parameters={"epochs": 3}, state=Scheduled(scheduled_time=first_at)
        )
        # The schedule's runs (created by Prefect's scheduler for recently updated deployments,
        # every 5 s): the first in an hour, the next ones a day and two days later.
        of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
        scheduled = wait_for(
            lambda: [run for run in client.read_flow_runs(deployment_filter=of_deployment)
                     if run.id != created.id and run.expected_start_time == first_at],
            timeout=30, what="the schedule's first run",
        )[0]  # fmt: skip
        ids: dict[str, Any] = {}

        def queued_in_files() -> bool:
            # The watcher records the 3 scheduled runs and the client run (ids from SQL's shared database).
            for run_id in fresh.run_ids(files):
                try:
                    ids.setdefault(str(_flow_run_of(files.record(run_id))), run_id)
                except FileNotFoundError:
                    continue
            return all(str(run.id) in ids for run in (created, scheduled))

        wait_for(queued_in_files, timeout=60, interval=0.2, what="both runs queued in FileStorage")
        runs = [(created, ids[str(created.id)]), (scheduled, ids[str(scheduled.id)])]
        # FileStorage is the first of the observers to record a run: the others follow.
        queued = {backend.name: _read(backend, runs, "QUEUED", timeout=30) for backend in every_backend}
        for name, records in queued.items():
            assert [record.status for record in records] == ["QUEUED", "QUEUED"], name
            assert [_flow_run_of(record) for record in records] == [str(created.id), str(scheduled.id)], name
            assert [record.config["epochs"] for record in records] == [3, 2], name
        for flow_run, _ in runs:
            client.set_flow_run_state(
                flow_run.id, Scheduled(scheduled_time=dt.datetime.now(dt.UTC)), force=True
            )

        done = {backend.name: _read(backend, runs, "COMPLETED", timeout=90) for backend in every_backend}
    for name, records in done.items():
        assert [_flow_run_of(record) for record in records] == [str(created.id), str(scheduled.id)], name
        assert [record.result for record in records] == [30, 20], name
        assert [record.config for record in records] == [each.config for each in queued[name]], name
