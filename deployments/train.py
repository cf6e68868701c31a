"""A small training experiment: gradient descent on a noisy line, no heavy dependencies.

Run it from the command line with Sacred's flags::

    python deployments/train.py with epochs=20 lr=0.05 -F my_runs

or serve it as the deployment ``experiment/train`` (see serve.py and the README).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time

from prefect_sacred import Experiment

ex = Experiment("experiment")


@ex.main
def train(epochs: int = 10, lr: float = 0.05, samples: int = 200, noise: float = 0.1,
          sleep: float = 0.0, _run=None) -> dict:  # type: ignore[no-untyped-def]
    """Fit y = 3x + 1 by gradient descent and report the final loss and weights."""
    data = [(x, 3 * x + 1 + random.gauss(0, noise)) for x in (random.random() for _ in range(samples))]
    weight, bias = 0.0, 0.0
    loss = float("inf")
    for epoch in range(epochs):
        grad_w = grad_b = loss = 0.0
        for x, y in data:
            error = weight * x + bias - y
            loss += error * error / samples
            grad_w += 2 * error * x / samples
            grad_b += 2 * error / samples
        weight -= lr * grad_w * 10
        bias -= lr * grad_b * 10
        _run.log_scalar("training.loss", loss, epoch)
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
