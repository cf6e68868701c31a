"""Serve the example experiment as the deployment ``experiment/train``.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Then, from another shell pointed at the same server:
``prefect deployment run experiment/train --param epochs=3``.

The observers are chosen by PREFECT_SACRED_OBSERVERS (observer URLs separated by spaces,
``block://<block-type>/<name>`` for a saved Block); without it runs go to ``my_runs`` at the
top of the repository, where ``make example`` puts them. Relative ``file://`` URLs are made
absolute here, against the directory serve.py was started from.
"""

import os
from pathlib import Path

from train import ex

from prefect_sacred.observers.registry import OBSERVERS_ENV_VAR

DEFAULT_RUNS = Path(__file__).resolve().parent.parent / "my_runs"


def absolute_file_urls(urls: str) -> str:
    """``urls`` with each ``file://`` URL's path made absolute."""
    return " ".join(
        f"file://{os.path.abspath(url[len('file://') :])}" if url.startswith("file://") else url
        for url in urls.split()
    )


if __name__ == "__main__":  # required: Prefect's serve re-imports this module in flow-run processes
    observers = absolute_file_urls(os.environ.get(OBSERVERS_ENV_VAR) or f"file://{DEFAULT_RUNS}")
    os.environ[OBSERVERS_ENV_VAR] = observers
    print(f"Runs of experiment/train are recorded by: {observers}", flush=True)
    # ex.serve: the flow's serve, with a watcher beside it (runs recorded QUEUED when created)
    ex.serve("train", tags=["prefect-sacred", "example"])
