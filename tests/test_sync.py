"""``prefect-sacred sync``: what a journal holds reaches the observers that missed it, once.

The backend is a real ``FileStorageObserver`` whose storage is "away" while a gate file exists,
so the run's end is left in the journal and the same storage is read back after sync.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import FileStorageObserver
from prefect_sacred.cli import main
from prefect_sacred.core.journal import RunJournal
from prefect_sacred.core.run import Run
from tests.support import REPO, InjectedOutput, subprocess_env, wait_for


class GatedFileStorage(FileStorageObserver):
    """File storage that refuses every event after the start while ``gate`` exists."""

    def __init__(self, basedir: str, gate: str) -> None:
        super().__init__(basedir)
        self.gate = gate

    def _check(self) -> None:
        if os.path.exists(self.gate):
            raise ConnectionError("storage is away")

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().log_metrics(*args, **kwargs)

    def heartbeat_event(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().heartbeat_event(*args, **kwargs)

    def completed_event(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().completed_event(*args, **kwargs)

    def failed_event(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().failed_event(*args, **kwargs)


@pytest.fixture(autouse=True)
def journal_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "journals"
    monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(root))
    return root


def started(observer: Any) -> tuple[Run, InjectedOutput]:
    run = Run(
        experiment_info={"name": "sync", "base_dir": "/tmp", "sources": []},
        host_info={},
        meta_info={},
        config={"lr": 0.1},
        command="main",
        observers=[observer],
        beat_interval=0,
        capture_mode="no",
        join_timeout=0.5,
    )
    run.fanout.retry_interval = run.fanout.max_retry_interval = 0.05
    run.start()
    assert run.start_error is None
    capture = InjectedOutput()
    run._capture = capture  # type: ignore[assignment]
    return run, capture


def stored(root: Path, run_id: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    run_dir = root / str(run_id)
    record = json.loads((run_dir / "run.json").read_text())
    metrics_file, cout_file = run_dir / "metrics.json", run_dir / "cout.txt"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return record, metrics, cout_file.read_text() if cout_file.exists() else ""


def test_sync_after_the_backend_returns_delivers_everything_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = tmp_path / "down"
    root = tmp_path / "runs"
    run, capture = started(GatedFileStorage(str(root), str(gate)))
    gate.touch()  # the storage goes away after the start
    for beat in range(3):
        for step in range(beat * 5, beat * 5 + 5):
            run.log_scalar("loss", float(step))
        capture.pending = f"epoch {beat}\n"
        run.beat()
    run.complete({"accuracy": 0.9})
    journal = run.journal_path
    assert journal is not None and os.path.isdir(journal)
    assert stored(root, run._id)[0]["status"] == "RUNNING"

    assert main(["sync", journal]) == 1  # still away: reported, kept
    assert "left" in capsys.readouterr().out
    gate.unlink()
    assert main(["sync", journal]) == 0
    out = capsys.readouterr().out
    assert "GatedFileStorage: delivered" in out and "journal removed" in out
    record, metrics, cout = stored(root, run._id)
    assert record["status"] == "COMPLETED" and record["result"] == {"accuracy": 0.9}
    assert metrics["loss"]["values"] == [float(step) for step in range(15)]
    assert metrics["loss"]["steps"] == list(range(15))
    assert cout == "epoch 0\nepoch 1\nepoch 2\n"
    assert not os.path.exists(journal)
    assert main(["sync", "--all"]) == 0  # nothing left anywhere
    assert "no journals" in capsys.readouterr().out


def test_sync_resumes_from_each_observers_cursor_without_duplicates(tmp_path: Path) -> None:
    gate = tmp_path / "down"
    root = tmp_path / "runs"
    run, capture = started(GatedFileStorage(str(root), str(gate)))
    run.log_scalar("loss", 0.0)
    run.beat()  # delivered while the storage is there
    time.sleep(0.2)
    gate.touch()
    run.log_scalar("loss", 1.0)
    capture.pending = "late output\n"
    run.complete(None)
    journal = run.journal_path
    assert journal is not None
    cursor = RunJournal.open(journal)
    delivered_before = cursor.cursor(0)
    cursor.close()
    assert delivered_before >= 2  # log_metrics and heartbeat of the first beat
    gate.unlink()
    assert main(["sync", journal]) == 0
    _, metrics, cout = stored(root, run._id)
    assert metrics["loss"]["values"] == [0.0, 1.0]  # the first point once, not twice
    assert cout == "late output\n"


def test_a_run_whose_process_died_is_ended_by_sync_with_its_last_points_and_output(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run, capture = started(FileStorageObserver(str(root)))
    for step in range(7):
        run.log_scalar("loss", float(step))
    capture.pending = "epoch 7 of 10\n"
    run.tick()  # the journal has them; no beat delivered them
    journal = run.journal_path
    assert journal is not None
    assert run._heartbeat is not None
    run._heartbeat.stop()  # what the death of the process does: no threads, the lock let go
    run.fanout.journal.close()  # type: ignore[union-attr]
    assert stored(root, run._id)[0]["status"] == "RUNNING"
    assert main(["sync", "--all"]) == 0
    record, metrics, cout = stored(root, run._id)
    assert record["status"] == "FAILED"
    assert "died without recording its end" in "".join(record["fail_trace"])
    assert metrics["loss"]["values"] == [float(step) for step in range(7)]
    assert cout == "epoch 7 of 10\n"


def test_a_malformed_command_line_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sync"])
    assert exited.value.code == 2
    assert "give journal directories or --all" in capsys.readouterr().err


SCRIPT = """
import sys, time
from prefect_sacred import Experiment

ex = Experiment("killed")

@ex.automain
def train(progress: str = "", _run=None):
    for step in range(100000):
        _run.log_scalar("loss", float(step), step)
        print(f"step {step}", flush=True)
        with open(progress, "a") as handle:
            handle.write(f"{step} {time.time()}\\n")
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_sync_ends_a_sigkilled_command_line_run_with_its_data(tmp_path: Path, journal_root: Path) -> None:
    script, progress, runs = tmp_path / "killed.py", tmp_path / "progress", tmp_path / "runs"
    script.write_text(SCRIPT)
    env = subprocess_env(PREFECT_SACRED_JOURNAL_DIR=str(journal_root))
    process = subprocess.Popen(
        [sys.executable, str(script), "with", f"progress={progress}", "-F", str(runs), "-b", "600"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: progress.exists() and len(progress.read_text().splitlines()) >= 40, timeout=120)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    killed_at = time.time()
    logged = [line.split() for line in progress.read_text().splitlines()]
    [run_dir] = [path for path in runs.iterdir() if path.name.isdigit()]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "RUNNING"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "prefect-sacred"), "sync", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record, metrics, cout = stored(runs, run_dir.name)
    assert record["status"] == "FAILED" and "died" in "".join(record["fail_trace"])
    values = metrics["loss"]["values"]
    # Every point logged more than ~1 s before the kill is stored, in order, once.
    old_enough = [float(step) for step, stamp in logged if float(stamp) < killed_at - 1.5]
    assert values[: len(old_enough)] == old_enough
    assert values == sorted(set(values))
    assert f"step {int(old_enough[-1])}\n" in cout
