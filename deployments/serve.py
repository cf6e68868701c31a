"""Serve the example experiment as the deployment ``experiment/train``.

    PREFECT_SACRED_OBSERVERS="file://./my_runs" python deployments/serve.py

Then, from another shell: ``prefect deployment run experiment/train --param epochs=3``.
The observers are chosen by PREFECT_SACRED_OBSERVERS (observer URLs separated by spaces,
``block://<block-type>/<name>`` for a saved Block); without it runs go to ./my_runs.
"""

import os

from train import train

if __name__ == "__main__":  # required: Prefect's serve re-imports this module in flow-run processes
    os.environ.setdefault("PREFECT_SACRED_OBSERVERS", "file://./my_runs")
    train.serve(name="train", tags=["prefect-sacred", "example"])
