"""A small training experiment: gradient descent on a noisy line, no heavy dependencies.

Written as a Sacred script (only its imports name prefect_sacred). Run it from the command line
with Sacred's flags::

    python deployments/train.py with epochs=20 lr=0.05 -F my_runs
    python deployments/train.py with quick -F my_runs      # a named config
    python deployments/train.py print_config with epochs=3

or serve it as the deployment ``experiment/train`` (see serve.py and the README): the config's
entries are the deployment's parameters, and ``named_configs`` picks named configs.
"""

# ruff: noqa: F841  (a config scope's local variables are the config entries)
from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time

from prefect_sacred import Experiment

ex = Experiment("experiment")
ex.beat_interval = 2.0  # metrics, output and the Prefect UI's progress bar every 2 s (default 10)


@ex.config
def cfg():  # type: ignore[no-untyped-def]
    epochs = 10  # passes of gradient descent over the data
    lr = 0.05  # learning rate
    samples = 200  # points drawn on the line
    noise = 0.1  # standard deviation of the noise added to each point
    sleep = 0.0  # seconds to wait after each epoch (to watch a live run)
    report_every = max(1, epochs // 5)  # epochs between printed losses (follows epochs)


@ex.named_config
def quick():  # type: ignore[no-untyped-def]
    """Three epochs on fewer points."""
    epochs = 3
    samples = 50


@ex.capture
def make_data(samples, noise, _rnd):  # type: ignore[no-untyped-def]
    """Points on y = 3x + 1 with Gaussian noise, from the run's seeded generator."""
    return [(x, 3 * x + 1 + random.gauss(0, noise)) for x in (float(_rnd.random()) for _ in range(samples))]


@ex.main
def train(epochs, lr, sleep, report_every, _run):  # type: ignore[no-untyped-def]
    """Fit y = 3x + 1 by gradient descent and report the final loss and weights."""
    data = make_data()
    _run.info["progress"] = {"total": epochs}  # the Prefect UI's progress bar counts the epochs
    weight, bias = 0.0, 0.0
    loss = float("inf")
    for epoch in range(epochs):
        grad_w = grad_b = loss = 0.0
        for x, y in data:
            error = weight * x + bias - y
            loss += error * error / len(data)
            grad_w += 2 * error * x / len(data)
            grad_b += 2 * error / len(data)
        weight -= lr * grad_w * 10
        bias -= lr * grad_b * 10
        _run.log_scalar("training.loss", loss, epoch)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss diverged at epoch {epoch + 1}: lr={lr} is too large")
        if (epoch + 1) % report_every == 0 or epoch + 1 == epochs:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}")
        time.sleep(sleep)
    _run.info["weights"] = {"weight": weight, "bias": bias}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model.json")
        with open(model, "w") as handle:
            json.dump({"weight": weight, "bias": bias}, handle)
        _run.add_artifact(model, content_type="application/json")
    return {"loss": loss, "weight": weight, "bias": bias}


if __name__ == "__main__":
    ex.run_commandline()
