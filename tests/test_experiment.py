"""The experiment API and the observer event contract, with the shipped test doubles."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from prefect_sacred import (
    Experiment,
    FileStorageObserver,
    ObserverError,
    apply_backspaces_and_linefeeds,
    current_run,
)
from prefect_sacred.testing import FailingObserver, InMemoryObserver


def event_names(observer: InMemoryObserver) -> list[str]:
    return [name for name, _ in observer.events]


def test_observers_run_in_descending_priority_and_the_first_id_wins() -> None:
    low, high = InMemoryObserver(priority=5), InMemoryObserver(priority=50)
    ex = Experiment("ids")
    ex.observers += [low, high]

    @ex.main
    def main() -> int:
        return 1

    run = ex.run()
    assert high.events[0][0] == low.events[0][0] == "started_event"
    assert high.events[0][1]["_id"] is None
    assert low.events[0][1]["_id"] == high.run["_id"]
    assert run._id == high.run["_id"] == low.run["_id"]


def test_id_option_presets_the_run_id() -> None:
    observer = InMemoryObserver()
    ex = Experiment("ids")
    ex.observers.append(observer)

    @ex.main
    def main() -> None:
        pass

    run = ex.run(options={"--id": "baseline-7"})
    assert run._id == "baseline-7" == observer.run["_id"]


def test_event_sequence_of_a_completed_run() -> None:
    observer = InMemoryObserver()
    ex = Experiment("events")
    ex.observers.append(observer)

    @ex.main
    def main(_run: Any = None) -> str:
        _run.log_scalar("loss", 0.5)
        return "done"

    ex.run(options={"--beat-interval": 60})
    assert event_names(observer) == [
        "started_event",
        "log_metrics",
        "heartbeat_event",
        "completed_event",
        "join",
    ]
    assert observer.run["metrics"]["loss"]["values"] == [0.5]
    assert observer.run["result"] == "done"


def test_an_observer_failing_at_start_fails_the_run_before_the_main_function() -> None:
    started = InMemoryObserver(priority=10)
    failing = FailingObserver(events={"started_event"}, exc=ConnectionError("db down"))
    ex = Experiment("start-failure")
    ex.observers += [started, failing]
    body_ran = []

    @ex.main
    def main() -> None:
        body_ran.append(True)

    with pytest.raises(
        ObserverError, match=r"FailingObserver failed to start the run: ConnectionError: db down"
    ):
        ex.run()
    assert body_ran == []
    assert started.run["status"] == "FAILED"  # the observers that started hear how it ended
    assert "failed_event" not in event_names(failing)


def test_an_observer_failing_later_keeps_receiving_events_and_catches_up() -> None:
    flaky = FailingObserver(events={"heartbeat_event"}, times=2)
    ex = Experiment("flaky")
    ex.observers.append(flaky)

    @ex.main
    def main(_run: Any = None) -> None:
        import time

        print("output that must arrive")
        _run.info["epoch"] = 3
        time.sleep(0.7)

    run = ex.run(options={"--beat-interval": 0.1, "--capture": "sys"})
    assert flaky.failures == 2
    assert run.observer_errors == {"FailingObserver": 2}
    assert flaky.run["status"] == "COMPLETED"
    assert flaky.run["info"]["epoch"] == 3
    assert "output that must arrive" in flaky.run["captured_out"]


def test_a_subclass_of_sacreds_own_run_observer_plugs_in_unchanged() -> None:
    sacred_observers = pytest.importorskip("sacred.observers")

    class SacredStyle(sacred_observers.RunObserver):  # type: ignore[misc]
        priority = 7

        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def started_event(
            self,
            ex_info: Any,
            command: Any,
            host_info: Any,
            start_time: Any,
            config: Any,
            meta_info: Any,
            _id: Any,
        ) -> str:
            self.calls.append(("started_event", {"config": config, "command": command}))
            return "sacred-1"

        def log_metrics(self, metrics_by_name: Any, info: Any) -> None:
            self.calls.append(("log_metrics", metrics_by_name))

        def completed_event(self, stop_time: Any, result: Any) -> None:
            self.calls.append(("completed_event", {"result": result}))

    observer = SacredStyle()
    ex = Experiment("sacred-compat")
    ex.observers.append(observer)

    @ex.main
    def train(lr: float = 0.1, _run: Any = None) -> float:
        _run.log_scalar("acc", 0.9)
        return lr

    run = ex.run()
    assert run._id == "sacred-1"
    names = [name for name, _ in observer.calls]
    assert names == ["started_event", "log_metrics", "completed_event"]
    assert observer.calls[0][1]["config"]["lr"] == 0.1
    assert observer.calls[1][1]["acc"]["values"] == [0.9]
    assert observer.calls[2][1] == {"result": 0.1}


def test_prefect_retries_start_the_run_once() -> None:
    observer = InMemoryObserver()
    ex = Experiment("retries")
    ex.observers.append(observer)
    attempts = []

    @ex.main(retries=2, retry_delay_seconds=0)
    def main() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("flaky data loader")
        return len(attempts)

    run = ex.run()
    assert run.result == 3
    assert event_names(observer).count("started_event") == 1
    assert observer.run["status"] == "COMPLETED"


def test_overlapping_runs_in_one_process_keep_their_own_state(tmp_path: Any) -> None:
    shared = FileStorageObserver(tmp_path / "runs")
    ex = Experiment("overlap")
    ex.observers.append(shared)
    barrier = threading.Barrier(2, timeout=30)

    @ex.main
    def main(label: str = "a") -> str:
        run = current_run()
        barrier.wait()  # both runs are live at once from here on
        for step in range(20):
            run.log_scalar(f"metric_{label}", step)
        run.info["label"] = label
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
    ids = {label: run._id for label, run in results.items()}
    assert len(set(ids.values())) == 2
    for label, run_id in ids.items():
        run_dir = tmp_path / "runs" / str(run_id)
        assert json.loads((run_dir / "run.json").read_text())["result"] == label
        assert json.loads((run_dir / "info.json").read_text())["label"] == label
        assert list(json.loads((run_dir / "metrics.json").read_text())) == [f"metric_{label}"]


def test_current_run_and_ex_info_exist_only_inside_a_run() -> None:
    ex = Experiment("context")
    with pytest.raises(RuntimeError, match="no experiment run is active"):
        current_run()
    with pytest.raises(RuntimeError):
        _ = ex.info

    @ex.main
    def main() -> bool:
        ex.info["inside"] = True
        return current_run().info["inside"]

    assert ex.run(options={"--unobserved": True}).result is True


def test_unobserved_runs_reach_no_observer() -> None:
    observer = InMemoryObserver()
    ex = Experiment("quiet")
    ex.observers.append(observer)

    @ex.main
    def main() -> None:
        pass

    ex.run(options={"-u": True})
    assert observer.events == []


def test_captured_out_filter_renders_progress_bars() -> None:
    observer = InMemoryObserver()
    ex = Experiment("progress")
    ex.observers.append(observer)
    ex.captured_out_filter = apply_backspaces_and_linefeeds

    @ex.main
    def main() -> None:
        print("progress 10%\rprogress 50%\rprogress 100%")

    ex.run(options={"--capture": "sys"})
    assert observer.run["captured_out"] == "progress 100%\n"


def test_seed_is_recorded_and_seeds_random() -> None:
    import random

    observer = InMemoryObserver()
    ex = Experiment("seeded")
    ex.observers.append(observer)

    @ex.main
    def main(_seed: int = 0) -> float:
        return random.random()

    first = ex.run(config_updates={"seed": 1234})
    second = ex.run(config_updates={"seed": 1234})
    assert first.result == second.result
    assert observer.run["config"]["seed"] == 1234
    assert isinstance(ex.run().config["seed"], int)


def test_artifacts_must_be_existing_files(tmp_path: Any) -> None:
    ex = Experiment("artifacts")
    ex.observers.append(InMemoryObserver())

    @ex.main
    def main(_run: Any = None) -> None:
        _run.add_artifact(str(tmp_path / "missing.txt"))

    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        ex.run()


def test_an_artifact_name_escaping_the_run_is_refused_to_the_caller(tmp_path: Any) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"1")
    memory = InMemoryObserver()
    ex = Experiment("artifacts")
    ex.observers += [FileStorageObserver(tmp_path / "runs"), memory]

    @ex.main
    def main(_run: Any = None) -> None:
        _run.add_artifact(str(source), name="../../escape.bin")

    with pytest.raises(ValueError, match="not a relative path inside the run"):
        ex.run()
    assert not (tmp_path / "escape.bin").exists()
    assert memory.run["status"] == "FAILED"
    assert memory.run["artifacts"] == []  # refused before any observer saw it


def test_an_artifact_name_only_one_observer_refuses_is_stored_by_the_others(tmp_path: Any) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"1")
    memory = InMemoryObserver()
    ex = Experiment("artifacts")
    ex.observers += [FileStorageObserver(tmp_path / "runs"), memory]

    @ex.main
    def main(_run: Any = None) -> None:
        _run.add_artifact(str(source), name="run.json")

    with pytest.raises(ValueError, match="would overwrite the observer's own file"):
        ex.run()
    assert [artifact["name"] for artifact in memory.run["artifacts"]] == ["run.json"]


def test_capture_mode_no_records_no_output() -> None:
    observer = InMemoryObserver()
    ex = Experiment("silent")
    ex.observers.append(observer)

    @ex.main
    def main() -> None:
        print("not recorded")

    ex.run(options={"-C": "no"})
    assert observer.run["captured_out"] == ""
    assert observer.run["status"] == "COMPLETED"


class _NoneReturningWrapper:
    """Like tqdm's DummyTqdmFile or hyperopt's redirection: write() returns None."""

    def __init__(self, file: Any, expose_file: bool) -> None:
        if expose_file:
            self.file = file
        self._target = file
        self.encoding = "utf-8"

    def write(self, text: str) -> None:
        self._target.write(text)

    def flush(self) -> None:
        self._target.flush()


@pytest.mark.parametrize("capture", ["fd", "sys"])
@pytest.mark.parametrize("expose_file", [True, False], ids=["tqdm-like", "opaque"])
def test_a_stdout_wrapper_whose_write_returns_none_is_captured_and_the_run_completes(
    capture: str, expose_file: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    observer = InMemoryObserver()
    ex = Experiment("wrapped")
    ex.observers.append(observer)

    @ex.main
    def main() -> int:
        print("through the wrapper")
        return 1

    monkeypatch.setattr(sys, "stdout", _NoneReturningWrapper(sys.stdout, expose_file))
    run = ex.run(options={"-C": capture})
    assert run.status == "COMPLETED"
    if expose_file or capture == "sys":  # a wrapper that hides its file may be caught twice in fd mode
        assert observer.run["captured_out"] == "through the wrapper\n"
    else:
        assert "through the wrapper\n" in observer.run["captured_out"]


def test_a_subprocess_outliving_the_run_neither_hangs_it_nor_loses_output() -> None:
    import os
    import subprocess
    import sys
    import time

    observer = InMemoryObserver()
    ex = Experiment("lingering")
    ex.observers.append(observer)
    children: list[subprocess.Popen[bytes]] = []

    @ex.main
    def main() -> None:
        # Inherits fds 1 and 2, the capture's pipes, and keeps them open for 60 s.
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        os.write(1, b"written at fd level\n")
        os.write(2, b"and to stderr\n")

    began = time.monotonic()
    try:
        ex.run(options={"--capture": "fd"})
        assert time.monotonic() - began < 30  # the end does not wait for the child's 60 s
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert "written at fd level" in observer.run["captured_out"]
    assert "and to stderr" in observer.run["captured_out"]


def test_metric_values_of_any_numeric_type_are_stored(tmp_path: Any) -> None:
    from decimal import Decimal
    from fractions import Fraction

    ex = Experiment("numbers")
    ex.observers.append(FileStorageObserver(tmp_path))

    @ex.main
    def main(_run: Any = None) -> None:
        for value in (Decimal("1.5"), Fraction(1, 4), True, 3):
            _run.log_scalar("mixed", value)

    run = ex.run()
    metrics = json.loads((tmp_path / str(run._id) / "metrics.json").read_text())
    assert metrics["mixed"]["values"] == [1.5, 0.25, True, 3]


@pytest.mark.parametrize("outcome", ["COMPLETED", "FAILED"])
def test_the_last_heartbeat_is_dated_at_the_stop_so_duration_is_the_bodys(outcome: str) -> None:
    """Omniboard and Sacredboard show (last heartbeat - start) as the duration; Prefect runs the
    end hooks a second or so after the body, which the final beat must not count."""
    observer = InMemoryObserver()
    ex = Experiment("dated")
    ex.observers.append(observer)

    @ex.main
    def main() -> int:
        if outcome == "FAILED":
            raise ValueError("diverged")
        return 1

    try:
        ex.run()
    except ValueError:
        pass
    run = observer.run
    assert run["status"] == outcome
    assert run["heartbeat"] == run["stop_time"]
