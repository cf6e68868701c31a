"""Ends of runs recorded by another process (the serve process of a cancelled or killed run).

The hook there never saw the run: it finds whether the run started, and its id, in the flow
run's label, rebuilds the observers, and lets each ``reattach``, with what Prefect knows of the
run available through ``resumed_run()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from prefect_sacred.flows.labels import RUN_ID_LABEL
from prefect_sacred.flows.lifecycle import RunLifecycle
from prefect_sacred.observers.base import ResumedRun, RunObserver, resumed_run


class Resumer(RunObserver):
    """Records what the process finishing a run told it."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.reattached: list[tuple[Any, ResumedRun | None]] = []
        self.ends: list[tuple[str, ResumedRun | None]] = []

    def reattach(self, _id: Any) -> bool:
        self.reattached.append((_id, resumed_run()))
        return self.accept

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self.ends.append((status, resumed_run()))


@flow(name="finish-elsewhere")
def _experiment_flow(lr: float = 0.1) -> None:
    pass


def _flow_run(labels: dict[str, Any]) -> Any:
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(_experiment_flow, parameters={"lr": 0.5})
        if labels:
            client.update_flow_run_labels(created.id, labels)
        return client.read_flow_run(created.id)


def _cancel_elsewhere(flow_run: Any, observers: list[Any]) -> None:
    lifecycle = RunLifecycle(new_run=lambda _: None, rebuild_observers=lambda: observers)  # type: ignore[arg-type,return-value]
    lifecycle.on_cancellation(flow=_experiment_flow, flow_run=flow_run, state=Cancelling())


def test_a_run_observed_by_notifiers_only_still_gets_its_end() -> None:
    notifier, storage = Resumer(), Resumer(accept=False)
    flow_run = _flow_run({RUN_ID_LABEL: ""})  # started, but no observer gave it an id
    _cancel_elsewhere(flow_run, [notifier, storage])
    assert [run_id for run_id, _ in notifier.reattached] == [None]
    assert storage.ends == []  # a storage observer does not know a run without an id
    [(status, resumed)] = notifier.ends
    assert status == "INTERRUPTED"
    assert resumed is not None
    assert resumed.flow_run_id == str(flow_run.id)
    assert resumed.flow_run_name == flow_run.name
    assert resumed.flow_name == "finish-elsewhere"
    assert resumed.parameters == {"lr": 0.5}
    assert resumed_run() is None  # only while the run is being finished


def test_a_flow_run_that_started_no_experiment_run_is_left_alone() -> None:
    notifier = Resumer()
    _cancel_elsewhere(_flow_run({}), [notifier])
    assert notifier.reattached == [] and notifier.ends == []


def test_the_labelled_id_is_what_observers_reattach_to() -> None:
    notifier = Resumer()
    _cancel_elsewhere(_flow_run({RUN_ID_LABEL: 42}), [notifier])
    assert [run_id for run_id, _ in notifier.reattached] == [42]


def test_storage_observers_know_no_run_without_an_id(backend: Any) -> None:
    assert backend.observer().reattach(None) is False


def test_the_dead_runs_journal_is_delivered_before_its_end(tmp_path: Any, monkeypatch: Any) -> None:
    """What the run logged after its last beat reaches the storage, then the end."""
    import json

    from prefect.states import Crashed

    from prefect_sacred import FileStorageObserver
    from prefect_sacred.core.run import Run
    from prefect_sacred.testing import InjectedOutput

    monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(tmp_path / "journals"))
    flow_run = _flow_run({})
    run = Run(
        experiment_info={"name": "elsewhere", "base_dir": str(tmp_path), "sources": []},
        host_info={},
        meta_info={"prefect": {"flow_run_id": str(flow_run.id)}},
        config={},
        command="main",
        observers=[FileStorageObserver(str(tmp_path / "runs"))],
        beat_interval=0,
        capture_mode="no",
    )
    run.start()
    run._capture = capture = InjectedOutput()  # type: ignore[assignment]
    run.log_scalar("loss", 0.5)
    capture.pending = "epoch 1\n"
    run.tick()  # journaled, never beaten: then the process is SIGKILLed
    assert run._heartbeat is not None
    run._heartbeat.stop()
    run.fanout.journal.close()  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run.id, {RUN_ID_LABEL: run._id})
    lifecycle = RunLifecycle(new_run=lambda _: None, rebuild_observers=lambda: [])  # type: ignore[arg-type,return-value]
    lifecycle.on_crashed(flow=_experiment_flow, flow_run=flow_run, state=Crashed(message="SIGKILL"))
    run_dir = tmp_path / "runs" / str(run._id)
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["status"] == "FAILED" and "SIGKILL" in "".join(stored["fail_trace"])
    assert json.loads((run_dir / "metrics.json").read_text())["loss"]["values"] == [0.5]
    assert (run_dir / "cout.txt").read_text() == "epoch 1\n"
