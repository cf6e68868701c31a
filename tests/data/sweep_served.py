"""A sweep served with ``flow.serve``, naming no hook: ``python sweep_served.py DEPLOYMENT``.

Served by tests/test_experiment_tasks_served.py, which cancels its runs through Prefect. Each
trial logs a point and a line every 50 ms until it is stopped; ``EVENT_LOG`` (an environment
variable) is a file every process appends the observer events it sends to, one line each, so the
test sees every end event whoever sent it.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_sacred import Experiment
from prefect_sacred.observers.base import RunObserver

ex = Experiment("served_sweep")
ex.beat_interval = 0.2


class EventLog(RunObserver):
    """Appends ``<event> <_id> [status]`` to the file ``EVENT_LOG`` names (rebuilt anywhere)."""

    priority = -100  # last: it gets the id of the storage observer before it

    def __init__(self) -> None:
        self._id: Any = None

    def _write(self, *words: Any) -> None:
        with open(os.environ["EVENT_LOG"], "a") as handle:
            handle.write(" ".join(str(word) for word in words) + "\n")

    def started_event(self, *args: Any, _id: Any = None, **kwargs: Any) -> Any:
        self._id = _id
        self._write("started_event", _id)
        return None

    def reattach(self, _id: Any) -> bool:
        self._id = _id
        return True

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self._write("completed_event", self._id)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._write("interrupted_event", self._id, status)

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._write("failed_event", self._id)


ex.observers.append(EventLog())


@ex.config
def cfg() -> None:
    lr = 0.1  # noqa: F841


@ex.main
def train(lr: float, _run: Any) -> int:
    _run.info["pid"] = os.getpid()
    step = 0
    deadline = time.monotonic() + 60
    # Ends once its run is recorded ended (INTERRUPTED by the cancellation), so the flow-run
    # process exits at the runner's SIGTERM instead of 30 s later at its SIGKILL.
    while time.monotonic() < deadline and _run.status == "RUNNING":
        _run.log_scalar("loss", lr * step, step)
        print(f"served trial lr={lr} step={step}", flush=True)
        step += 1
        time.sleep(0.05)
    return step


train_task = ex.task()


runner: Any = ThreadPoolTaskRunner(max_workers=4)


@flow(name="served-sweep", task_runner=runner)
def sweep(lrs: list[float]) -> list[int]:
    return [future.result() for future in train_task.map(lr=lrs)]


if __name__ == "__main__":
    sweep.serve(name=sys.argv[1])
