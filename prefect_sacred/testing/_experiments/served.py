"""An experiment served as a deployment by the contract suite: ``python served.py NAME``.

Its observers come from PREFECT_SACRED_OBSERVERS, the deployment setting, in the serve process
and in every flow-run process alike.
"""

import os
import sys
import time

from prefect_sacred import Experiment

ex = Experiment("served")
ex.beat_interval = 0.2


@ex.main
def served(seconds: float = 60.0, _run=None) -> str:  # type: ignore[no-untyped-def]
    _run.info["pid"] = os.getpid()
    print("served run started", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "finished"


if __name__ == "__main__":
    ex.flow.serve(name=sys.argv[1])
