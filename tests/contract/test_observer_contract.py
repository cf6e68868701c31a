"""The contract: the same runs, recorded by every observer, read back the same way.

Each scenario runs a real Prefect flow against the session's Prefect server and reads the run
back through its backend (tests/backends/), so a new observer joins by adding a backend.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from prefect_sacred import Experiment
from tests.backends import Backend


class Point:
    """A user's own object in config, info and the result."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def test_completed_run_records_config_result_output_and_timestamps(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train(epochs: int = 2, lr: float = 0.1, layers: dict = {"hidden": 8}, _run: Any = None) -> dict:  # noqa: B006
        _run.info["note"] = "hello"
        print("training", epochs)
        subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
        os.write(1, b"straight to fd 1\n")
        print("the last line")
        return {"accuracy": lr * epochs}

    run = ex.run(config_updates={"epochs": 3, "layers.hidden": 16}, options={"--beat-interval": 0.2})
    record = backend.record(run._id)
    assert record.status == "COMPLETED"
    assert record.config["epochs"] == 3
    assert record.config["layers"] == {"hidden": 16}
    assert isinstance(record.config["seed"], int)
    assert record.result == {"accuracy": pytest.approx(0.3)}
    assert record.info["note"] == "hello"
    for line in ("training 3", "from a subprocess", "straight to fd 1", "the last line"):
        assert line in record.captured_out
    assert record.start_time is not None and record.stop_time is not None
    assert record.start_time <= record.stop_time
    assert record.heartbeat is not None


def test_failed_run_records_the_trace_as_a_list_of_lines(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train() -> None:
        print("about to fail")
        raise ValueError("diverged at epoch 3")

    with pytest.raises(ValueError, match="diverged"):
        ex.run()
    record = backend.record(_last_id(backend, ex))
    assert record.status == "FAILED"
    assert isinstance(record.fail_trace, list) and all(isinstance(line, str) for line in record.fail_trace)
    assert record.fail_trace[0].startswith("Traceback")
    assert record.fail_trace[-1].strip() == "ValueError: diverged at epoch 3"
    assert "about to fail" in record.captured_out
    assert record.stop_time is not None


def test_flow_timeout_is_recorded_as_timeout(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main(timeout_seconds=1)
    def train() -> None:
        print("waiting")
        time.sleep(10)

    with pytest.raises(Exception, match="timed out"):
        ex.run()
    record = backend.record(_last_id(backend, ex))
    assert record.status == "TIMEOUT"
    assert record.info["prefect_state"]["name"] == "TimedOut"


def test_keyboard_interrupt_is_recorded_as_interrupted(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train() -> None:
        print("interrupting")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ex.run()
    record = backend.record(_last_id(backend, ex))
    assert record.status == "INTERRUPTED"
    assert record.stop_time is not None
    assert "interrupting" in record.captured_out


def test_metrics_across_several_beats_arrive_complete_and_in_order(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train(_run: Any = None) -> None:
        for phase in range(3):
            for step in range(50):
                _run.log_scalar("loss", 1.0 / (phase * 50 + step + 1))
                _run.log_scalar("accuracy", np.float32(0.5), step=phase * 100 + step)
            time.sleep(0.5)  # several heartbeats (0.2 s) happen between phases

    run = ex.run(options={"--beat-interval": 0.2})
    record = backend.record(run._id)
    assert record.metrics["loss"]["steps"] == list(range(150))
    assert record.metrics["loss"]["values"][:2] == [1.0, 0.5]
    assert record.metrics["accuracy"]["steps"] == [p * 100 + s for p in range(3) for s in range(50)]
    assert record.metrics["accuracy"]["values"] == [0.5] * 150


def test_artifacts_and_resources_are_stored(backend: Backend, tmp_path: Any) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00weights\xff")
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train(_run: Any = None) -> str:
        with ex.open_resource(str(data)) as handle:
            content = handle.read()
        _run.add_artifact(str(model), name="weights.bin", metadata={"epoch": 3})
        _run.add_artifact(str(data))
        return content

    run = ex.run()
    record = backend.record(run._id)
    assert record.artifacts["weights.bin"] == b"\x00weights\xff"
    assert record.artifacts["data.csv"] == b"a,b\n1,2\n"
    assert record.resources == ["data.csv"]
    assert record.result == "a,b\n1,2\n"


def test_values_json_cannot_express_are_stored_without_crashing_the_run(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())

    @ex.main
    def train(
        weights: Any = np.arange(3),  # noqa: B008
        when: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5),
        labels: set = {"b", "a"},  # noqa: B006
        pair: tuple = (1, 2),
        origin: Any = Point(0, 0),  # noqa: B008
        _run: Any = None,
    ) -> Any:
        assert isinstance(weights, np.ndarray) and isinstance(labels, set) and isinstance(origin, Point)
        _run.info.update(
            array=np.arange(3),
            scalar=np.float64(1.5),
            when=dt.datetime(2024, 1, 2, 3, 4, 5),
            labels={"b", "a"},
            pair=(1, 2),
            point=Point(1, 2),
            nan=float("nan"),
        )
        return {"array": np.ones(2), "point": Point(3, 4), "scalar": np.int64(7)}

    run = ex.run(config_updates={"pair": (3, 4)})
    record = backend.record(run._id)
    assert record.status == "COMPLETED"
    assert set(record.config) >= {"weights", "when", "labels", "pair", "origin", "seed"}
    assert all(record.config[key] is not None for key in ("weights", "when", "labels", "pair", "origin"))
    assert set(record.info) >= {"array", "scalar", "when", "labels", "pair", "point", "nan"}
    assert record.result is not None


def test_twenty_megabytes_of_output_are_captured_whole(backend: Backend) -> None:
    ex = Experiment("contract")
    ex.observers.append(backend.observer())
    line = "x" * 99 + "\n"

    @ex.main
    def train() -> None:
        chunk = line * 10_000  # 1 MB
        for _ in range(20):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        print("the end")

    run = ex.run(options={"--beat-interval": 0.5})
    record = backend.record(run._id)
    assert record.status == "COMPLETED"
    assert record.captured_out.count(line) >= 200_000
    assert record.captured_out.rstrip().endswith("the end")


def _last_id(backend: Backend, ex: Experiment) -> Any:
    """The id of the run that just ended (a failed run does not return from ``ex.run``)."""
    assert ex.last_run is not None
    return ex.last_run._id
