"""Served by tests/test_prefect_ui_served.py: ``python ui_served.py DEPLOYMENT``.

Logs a point every 50 ms and declares its progress, so its live artifacts exist before the
test cancels it or kills its process.
"""

import os
import sys
import time

from prefect_sacred import Experiment

ex = Experiment("ui-served")
ex.beat_interval = 0.2


@ex.main
def ui_served(seconds: float = 60.0, _run=None) -> int:  # type: ignore[no-untyped-def]
    _run.info["pid"] = os.getpid()
    _run.info["progress"] = {"total": 1000}
    step = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _run.log_scalar("loss", 1.0 / (step + 1), step)
        step += 1
        time.sleep(0.05)
    return step


if __name__ == "__main__":
    ex.flow.serve(name=sys.argv[1])
