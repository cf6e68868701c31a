"""The contract's in-process scenarios: real Prefect flow runs, read back from the storage."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.observers.base import InvalidArtifactName
from prefect_sacred.testing._suite import SuiteHooks, wait_for


class Point:
    """A user's own object in config, info and the result."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def _last_id(ex: Any) -> Any:
    """The id of the run that just ended (a failed run does not return from ``ex.run``)."""
    assert ex.last_run is not None, "the run did not start"
    return ex.last_run._id


class RunScenarios(SuiteHooks):
    """Runs in this process, through one fresh ``observer()`` per scenario."""

    def test_a_completed_run_records_config_result_output_meta_and_times(self) -> None:
        ex = self.experiment()

        @ex.main
        def train(
            epochs: int = 2,
            lr: float = 0.1,
            layers: dict[str, int] = {"hidden": 8},  # noqa: B006
            _run: Any = None,
        ) -> dict[str, float]:
            _run.info["note"] = "hello"
            print("training", epochs)
            subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
            os.write(1, b"straight to fd 1\n")
            print("the last line")
            return {"accuracy": lr * epochs}

        run = ex.run(
            config_updates={"epochs": 3, "layers.hidden": 16},
            options={"--beat-interval": 0.2, "--comment": "contract comment"},
        )
        record = self.read_run(run._id)
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
        assert record.meta.get("comment") == "contract comment"

    def test_a_run_id_given_to_the_observer_is_the_one_it_stores(self) -> None:
        ex = self.experiment()

        @ex.main
        def train() -> str:
            return "preset"

        preset = f"contract-preset-{uuid.uuid4().hex[:8]}"  # storage may outlive the scenario
        run = ex.run(options={"--id": preset})
        assert run._id == preset
        assert self.read_run(preset).result == "preset"

    def test_a_failed_run_records_the_trace_as_a_list_of_lines(self) -> None:
        ex = self.experiment()

        @ex.main
        def train() -> None:
            print("about to fail")
            raise ValueError("diverged at epoch 3")

        with pytest.raises(ValueError, match="diverged"):
            ex.run()
        record = self.read_run(_last_id(ex))
        assert record.status == "FAILED"
        assert isinstance(record.fail_trace, list)
        assert all(isinstance(line, str) for line in record.fail_trace)
        assert record.fail_trace[0].startswith("Traceback")
        assert record.fail_trace[-1].strip() == "ValueError: diverged at epoch 3"
        assert "about to fail" in record.captured_out
        assert record.stop_time is not None

    def test_metrics_and_info_logged_just_before_a_failure_are_all_stored(self) -> None:
        ex = self.experiment()

        @ex.main
        def train(_run: Any = None) -> None:
            for step in range(30):
                _run.log_scalar("loss", float(step))
            time.sleep(0.5)  # beats (0.2 s) store the first points
            for step in range(30, 60):  # only the final beat, before failed_event, has these
                _run.log_scalar("loss", float(step))
            _run.info["last_step"] = 59
            raise RuntimeError("diverged after logging")

        with pytest.raises(RuntimeError, match="diverged after logging"):
            ex.run(options={"--beat-interval": 0.2})
        record = self.read_run(_last_id(ex))
        assert record.status == "FAILED"
        assert record.fail_trace and record.fail_trace[-1].strip() == "RuntimeError: diverged after logging"
        assert record.metrics["loss"]["steps"] == list(range(60))
        assert record.metrics["loss"]["values"] == [float(step) for step in range(60)]
        assert record.info["last_step"] == 59

    def test_a_flow_timeout_is_recorded_as_timeout(self) -> None:
        ex = self.experiment()

        def train() -> None:
            print("waiting")
            for _ in range(200):  # short sleeps: Prefect's timeout lands between them
                time.sleep(0.05)

        ex.main(train, timeout_seconds=1)

        with pytest.raises(Exception, match="timed out"):
            ex.run()
        record = self.read_run(_last_id(ex))
        assert record.status == "TIMEOUT"
        assert "prefect_state" not in record.info  # info holds only what the user put there
        assert ex.last_run is not None and ex.last_run.meta_info["prefect"]["state"]["name"] == "TimedOut"
        assert record.stop_time is not None

    def test_a_keyboard_interrupt_is_recorded_as_interrupted(self) -> None:
        ex = self.experiment()

        @ex.main
        def train() -> None:
            print("interrupting")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ex.run()
        record = self.read_run(_last_id(ex))
        assert record.status == "INTERRUPTED"
        assert record.stop_time is not None
        assert "interrupting" in record.captured_out

    def test_a_live_run_is_readable_with_its_info_output_and_metrics(self) -> None:
        ex = self.experiment()
        seen: list[Any] = []

        @ex.main
        def train(_run: Any = None) -> str:
            print("halfway there", flush=True)
            _run.info["progress"] = 0.5
            for step in range(5):
                _run.log_scalar("live", step * 2.0)

            def stored() -> Any:
                record = self.read_run(_run._id)
                live = record.metrics.get("live", {}).get("steps") == list(range(5))
                ready = record.info.get("progress") == 0.5 and "halfway there" in record.captured_out
                # A store of several objects (S3, GCS) shows a beat's parts one after another.
                ready = ready and record.heartbeat is not None
                return live and ready and record

            seen.append(wait_for(stored, timeout=20, what="heartbeats to store the live run"))
            return "done"

        run = ex.run(options={"--beat-interval": 0.2})
        live = seen[0]
        assert live.status == "RUNNING"
        assert live.stop_time is None
        assert live.heartbeat is not None
        assert self.read_run(run._id).status == "COMPLETED"

    def test_metrics_across_several_beats_arrive_complete_and_in_order(self) -> None:
        half: Any = float
        try:
            from numpy import float32 as half  # a numpy scalar, as training code logs them
        except ImportError:
            pass
        ex = self.experiment()

        @ex.main
        def train(_run: Any = None) -> None:
            for phase in range(3):
                for step in range(50):
                    _run.log_scalar("loss", 1.0 / (phase * 50 + step + 1))
                    _run.log_scalar("accuracy", half(0.5), step=phase * 100 + step)
                time.sleep(0.3)  # heartbeats (0.2 s) happen between phases

        run = ex.run(options={"--beat-interval": 0.2})
        record = self.read_run(run._id)
        assert record.metrics["loss"]["steps"] == list(range(150))
        assert record.metrics["loss"]["values"][:2] == [1.0, 0.5]
        assert record.metrics["accuracy"]["steps"] == [p * 100 + s for p in range(3) for s in range(50)]
        assert record.metrics["accuracy"]["values"] == [0.5] * 150

    def test_artifacts_and_resources_are_stored_from_any_thread(self, tmp_path: Path) -> None:
        model = tmp_path / "model.bin"
        model.write_bytes(b"\x00weights\xff")
        data = tmp_path / "data.csv"
        data.write_text("a,b\n1,2\n")
        ex = self.experiment()

        @ex.main
        def train(_run: Any = None) -> str:
            with ex.open_resource(str(data)) as handle:
                content = handle.read()
            _run.add_artifact(str(model), name="weights.bin", metadata={"epoch": 3})
            _run.add_artifact(str(data))
            worker = threading.Thread(
                target=_run.add_artifact, args=(str(model),), kwargs={"name": "thread.bin"}
            )
            worker.start()
            worker.join()
            return str(content)

        run = ex.run()
        record = self.read_run(run._id)
        assert record.artifacts["weights.bin"] == b"\x00weights\xff"
        assert record.artifacts["data.csv"] == b"a,b\n1,2\n"
        assert record.artifacts["thread.bin"] == b"\x00weights\xff"
        assert record.resources == ["data.csv"]
        assert record.result == "a,b\n1,2\n"

    def test_an_artifact_name_escaping_the_run_is_refused_to_the_caller(self, tmp_path: Path) -> None:
        before, after = tmp_path / "before.txt", tmp_path / "after.txt"
        before.write_text("before")
        after.write_text("after")
        ex = self.experiment()
        refused: list[BaseException] = []

        @ex.main
        def train(_run: Any = None) -> str:
            _run.add_artifact(str(before))
            try:
                _run.add_artifact(str(before), name="../escape")
            except Exception as exc:
                refused.append(exc)
            _run.add_artifact(str(after))
            return "done"

        run = ex.run()
        assert refused, "add_artifact(name='../escape') returned: the observer must raise InvalidArtifactName"
        assert isinstance(refused[0], InvalidArtifactName), (
            f"expected InvalidArtifactName, got {refused[0]!r}"
        )
        record = self.read_run(run._id)
        assert record.status == "COMPLETED"
        assert record.artifacts.get("before.txt") == b"before"
        assert record.artifacts.get("after.txt") == b"after"
        assert not any("escape" in name for name in record.artifacts)

    def test_overlapping_runs_through_one_observer_keep_their_own_state(self) -> None:
        ex = self.experiment("overlap")
        barrier = threading.Barrier(2, timeout=30)

        @ex.main
        def main(label: str = "a", _run: Any = None) -> str:
            barrier.wait()  # both runs are live at once from here on
            for step in range(20):
                _run.log_scalar(f"metric_{label}", step)
            _run.info["label"] = label
            print(f"output of {label}")
            barrier.wait()
            return label

        results: dict[str, Any] = {}

        def start(label: str) -> None:
            results[label] = ex.run(config_updates={"label": label}, options={"--capture": "sys"})

        threads = [threading.Thread(target=start, args=(label,)) for label in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert set(results) == {"a", "b"}, "a run did not finish"
        assert results["a"]._id != results["b"]._id
        for label, run in results.items():
            record = self.read_run(run._id)
            assert record.status == "COMPLETED"
            assert record.result == label
            assert record.config["label"] == label
            assert record.info["label"] == label
            assert list(record.metrics) == [f"metric_{label}"]
            assert record.metrics[f"metric_{label}"]["steps"] == list(range(20))
            other = "b" if label == "a" else "a"
            assert f"output of {label}" in record.captured_out
            assert f"output of {other}" not in record.captured_out

    @pytest.mark.filterwarnings("ignore:Default value .* is not JSON serializable")
    def test_values_json_cannot_express_are_stored_without_crashing_the_run(self) -> None:
        np = pytest.importorskip("numpy")
        ex = self.experiment()

        @ex.main
        def train(
            weights: Any = np.arange(3),  # noqa: B008
            when: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5),
            labels: set[str] = {"b", "a"},  # noqa: B006
            pair: tuple[int, int] = (1, 2),
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
        record = self.read_run(run._id)
        assert record.status == "COMPLETED"
        assert set(record.config) >= {"weights", "when", "labels", "pair", "origin", "seed"}
        assert all(record.config[key] is not None for key in ("weights", "when", "labels", "pair", "origin"))
        assert set(record.info) >= {"array", "scalar", "when", "labels", "pair", "point", "nan"}
        assert record.result is not None

    def test_twenty_megabytes_of_output_are_captured_whole(self) -> None:
        ex = self.experiment()
        line = "x" * 99 + "\n"

        @ex.main
        def train() -> None:
            chunk = line * 10_000  # 1 MB
            for _ in range(20):
                sys.stdout.write(chunk)
            sys.stdout.flush()
            print("the end")

        run = ex.run(options={"--beat-interval": 0.5})
        record = self.read_run(run._id)
        assert record.status == "COMPLETED"
        assert record.captured_out.count(line) >= 200_000
        assert record.captured_out.rstrip().endswith("the end")
