"""One cancel watch per ``ex.task()`` and process, however many copies of its lifecycle live there.

On Dask or Ray each trial unpickles its own ``TrialLifecycle``; here two unpickled copies (what
two trials on one worker hold) each start a trial of the same parent, against the test Prefect
server: they get the same watch, one polling thread, and both trials end INTERRUPTED when the
parent is cancelled.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import cloudpickle
from prefect import flow

from prefect_sacred import Experiment
from prefect_sacred.flows.starting import Prepared
from prefect_sacred.tasks.cancel_watch import CancelWatch
from prefect_sacred.tasks.trial_run import Trial, TrialRun
from prefect_sacred.tasks.trials import TrialLifecycle
from prefect_sacred.testing import InMemoryObserver
from tests.support import wait_for

ex = Experiment("cancel_watch_shared")  # module level, as a sweep's experiment


@ex.main
def train() -> int:
    return 1


@flow
def parent_flow() -> None:
    """Only a flow to create a parent flow run of (never called)."""


def _live_trial(lifecycle: TrialLifecycle, parent: uuid.UUID, observer: InMemoryObserver) -> TrialRun:
    run = TrialRun(
        experiment_info={"name": ex.name},
        host_info={},
        meta_info={"prefect": {}},
        config={"seed": 1},
        command="train",
        observers=[observer],
        beat_interval=0,
        capture_mode="no",
        journal=False,
    )
    run.trial = (str(parent), str(uuid.uuid4()), "train-0")
    run.start()
    with lifecycle.lock:
        lifecycle.live[uuid.uuid4()] = Trial(run, Prepared(None, "train"), parent, cancellable=True)
    return run


def _watch_threads(token: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.endswith(token[:8])]


def test_lifecycles_of_one_experiment_task_share_one_cancel_watch() -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    original = TrialLifecycle(ex)
    copies: list[Any] = [cloudpickle.loads(cloudpickle.dumps(original)) for _ in range(2)]
    assert copies[0] is not copies[1] and copies[0].token == copies[1].token == original.token
    with get_client(sync_client=True) as client:
        parent = client.create_flow_run(parent_flow).id
    observers = [InMemoryObserver() for _ in range(3)]
    runs = [_live_trial(copies[index], parent, observers[index]) for index in (0, 1)]

    watches = [CancelWatch.watch(lifecycle, every=0.1) for lifecycle in copies]
    assert watches[0] is watches[1]
    assert len(_watch_threads(original.token)) == 1
    assert CancelWatch.watch(TrialLifecycle(ex), every=0.1) is not watches[0]  # another ex.task()

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(parent, Cancelling(), force=True)

    def recorded() -> list[str]:
        return [run["status"] for observer in observers for run in observer.runs]

    wait_for(lambda: recorded() == ["INTERRUPTED"] * 2, timeout=10, what="both trials recorded ended")
    assert [run.status for run in runs] == ["INTERRUPTED"] * 2
    assert not copies[0].live and not copies[1].live
    wait_for(lambda: not _watch_threads(original.token), timeout=5, what="the watch to stop")
    assert not watches[0].running
    # The next trial of that ex.task() here gets a watch again.
    later = _live_trial(copies[0], parent, observers[2])
    again = CancelWatch.watch(copies[0], every=0.1)
    assert again is not watches[0] and again.running
    wait_for(lambda: recorded() == ["INTERRUPTED"] * 3, timeout=10, what="the later trial ended")
    assert later.status == "INTERRUPTED"
