"""An experiment run from the command line by the contract suite.

``python cli.py with mode=sigterm -F runs``: ``mode`` is ``complete``, ``fail``, ``sigterm``
(the process sends itself SIGTERM) or ``sigint`` (Ctrl-C). Observers come from the flags.
"""

import os
import signal
import sys
import time

from prefect_sacred import Experiment

ex = Experiment("cli")


@ex.main
def cli(mode: str = "complete") -> str:
    # One write. print() writes its pieces one by one when PYTHONUNBUFFERED is set, and stdout
    # and stderr are two pipes: the capture may take a stderr line written just before between
    # them (as Sacred's fd capture can), which splits the line the scenario looks for.
    sys.stdout.write(f"cli run {mode}\n")
    sys.stdout.flush()
    if mode in ("sigterm", "sigint"):  # SIGINT is what Ctrl-C sends
        os.kill(os.getpid(), signal.SIGTERM if mode == "sigterm" else signal.SIGINT)
        time.sleep(30)
    if mode == "fail":
        raise RuntimeError("cli failure")
    return mode


if __name__ == "__main__":
    ex.run_commandline()
