"""An experiment run from the command line by the contract suite.

``python cli.py with mode=sigterm -F runs``: ``mode`` is ``complete``, ``fail``, ``sigterm``
(the process sends itself SIGTERM) or ``sigint`` (Ctrl-C). Observers come from the flags.
"""

import os
import signal
import time

from prefect_sacred import Experiment

ex = Experiment("cli")


@ex.main
def cli(mode: str = "complete") -> str:
    print("cli run", mode, flush=True)
    if mode in ("sigterm", "sigint"):  # SIGINT is what Ctrl-C sends
        os.kill(os.getpid(), signal.SIGTERM if mode == "sigterm" else signal.SIGINT)
        time.sleep(30)
    if mode == "fail":
        raise RuntimeError("cli failure")
    return mode


if __name__ == "__main__":
    ex.run_commandline()
