"""An experiment served as a deployment by the contract suite: ``python served.py NAME``.

Its observers come from PREFECT_SACRED_OBSERVERS, the deployment setting, in the serve process
and in every flow-run process alike; ``CONTRACT_BEAT_INTERVAL`` sets its beat interval. Given a
``progress`` file, a run logs a metric point and a line of output every 50 ms and appends
``step unix_time`` to the file after each (its first line is the run's pid).
"""

import os
import sys
import time

from prefect_sacred import Experiment

ex = Experiment("served")
ex.beat_interval = float(os.environ.get("CONTRACT_BEAT_INTERVAL", "0.2"))


@ex.main
def served(seconds: float = 60.0, progress: str = "", _run=None) -> str:  # type: ignore[no-untyped-def]
    _run.info["pid"] = os.getpid()
    print("served run started", flush=True)
    if progress:
        with open(progress, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        if progress:
            _run.log_scalar("loss", float(step), step)
            print(f"step {step}", flush=True)
            with open(progress, "a") as handle:
                handle.write(f"{step} {time.time()}\n")
            step += 1
        time.sleep(0.05)
    return "finished"


if __name__ == "__main__":
    ex.flow.serve(name=sys.argv[1])
