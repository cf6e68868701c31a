"""A sweep whose process dies mid-trial (SIGKILL), as a served flow run's process does when
its run is cancelled. Run as ``python sweep_killed.py RUNS_DIR``; tests import it too."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from prefect import flow

from prefect_sacred import Experiment, FileStorageObserver

ex = Experiment("killed_sweep")
ex.beat_interval = 0.3


@ex.config
def cfg() -> None:
    lr = 0.1  # noqa: F841


@ex.main
def train(lr: float, _run: Any) -> None:
    for step in range(3):
        _run.log_scalar("loss", lr * (step + 1), step)
        print(f"killed trial lr={lr} step={step}", flush=True)
    time.sleep(1.5)  # the journal takes output and points every second
    os.kill(os.getpid(), signal.SIGKILL)


train_task = ex.task()


@flow(name="killed-sweep")
def sweep() -> None:
    train_task.submit(lr=0.3).wait()


if __name__ == "__main__":
    ex.observers.append(FileStorageObserver(sys.argv[1]))
    sweep()
