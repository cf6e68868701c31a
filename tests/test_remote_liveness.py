"""Runs on another machine, for real: the watcher hears their beat events, ends a SIGKILLed plain
script within its silence limit, leaves a run paused for 2 beat intervals alone, and a run it
took for dead that wakes up still ends with its true status.

"Another machine" is what the watcher sees of one: the runs keep their journals in a directory
the watcher does not look in, so no journal lock can tell it whether they live.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, subprocess_env, wait_for

EXPERIMENT = """
import os
import time
from prefect_sacred import Experiment

ex = Experiment()


@ex.config
def cfg():
    until = ""


@ex.main
def train(until, _run):
    step = 0
    while not os.path.exists(until):
        _run.log_scalar("loss", 1 / (step + 1), step)
        step += 1
        time.sleep(0.05)
    return step


if __name__ == "__main__":
    ex.run_commandline()
"""

BEAT = 2.0  # the watcher ends a run after 3 beats of silence (--dead-after 0)


class Hosts:
    """An experiment script, its observers (shared, as a database is), and two journal directories."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"remote-{uuid.uuid4().hex[:8]}"
        self.script = tmp_path / f"{self.name}.py"
        self.script.write_text(EXPERIMENT)
        self.tmp = tmp_path
        self.runs = tmp_path / "runs"
        self.db = tmp_path / "runs.db"
        observers = f"file://{self.runs} sqlite:///{self.db}"
        self.run_env = subprocess_env(
            PREFECT_SACRED_OBSERVERS=observers, PREFECT_SACRED_JOURNAL_DIR=tmp_path / "run-host"
        )
        self.watcher_env = subprocess_env(
            PREFECT_SACRED_OBSERVERS=observers,
            PREFECT_SACRED_JOURNAL_DIR=tmp_path / "watcher-host",
        )
        self.dead_after = 0.0  # the watcher's --dead-after: its limit is then 3 beats

    @contextmanager
    def watcher(self) -> Iterator[Path]:
        log = self.tmp / "watcher.log"
        argv = ["-m", "prefect_sacred.cli", "watch", "--dead-after", str(self.dead_after), str(self.script)]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [PYTHON, *argv],
                env=self.watcher_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                wait_for(lambda: "watching runs of flow" in log.read_text(), timeout=60, what="the watcher")
                yield log
            finally:
                process.terminate()
                process.wait(20)

    def start(self, run_id: int, here: bool = False) -> subprocess.Popen[bytes]:
        """A plain ``python exp.py`` run, recorded as ``run_id``, until its flag file exists; on
        the watcher's machine when ``here`` (its journal where the watcher looks)."""
        argv = [str(self.script), "-i", str(run_id), "-b", str(BEAT), "with", f"until={self.flag(run_id)}"]
        env = self.watcher_env if here else self.run_env
        return subprocess.Popen(
            [PYTHON, *argv],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def beating(self, run_id: int) -> None:
        wait_for(lambda: self.record(run_id)["heartbeat"], timeout=60, what=f"run {run_id}'s first beat")

    def flag(self, run_id: int) -> Path:
        return self.tmp / f"stop-{run_id}"

    def record(self, run_id: int) -> dict[str, Any]:
        return dict(json.loads((self.runs / str(run_id) / "run.json").read_text()))

    def wait_status(self, run_id: int, status: str, timeout: float = 120) -> dict[str, Any]:
        """The run's file record once both backends show ``status``: each observer is delivered
        to by its own worker, so the file record can be ahead of the SQL row. The bound is far
        past the silence limit: on a loaded machine the watcher's own loop can stall, and a
        stalled watcher rightly counts no silence while it heard nothing."""
        return wait_for(
            lambda: (
                (record := self.record(run_id))["status"] == status
                and (str(run_id), status) in self.sql_rows()
                and record
            ),
            timeout=timeout,
            interval=0.1,
            what=f"run {run_id} to be {status} in both backends",
        )

    def sql_rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("select run_id, status from run order by id"))


def flow_run_state(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state


@pytest.mark.slow
def test_a_run_on_another_host_is_ended_by_silence_and_a_paused_one_lives_on(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path)
    with hosts.watcher() as log:
        paused, dozing, local = hosts.start(1), hosts.start(2), hosts.start(3, here=True)
        try:
            for run_id in (1, 2, 3):
                hosts.beating(run_id)
            beat = hosts.record(1)["heartbeat"]
            wait_for(lambda: hosts.record(1)["heartbeat"] != beat, timeout=10, what="a fresh beat of run 1")
            for process in (paused, dozing):
                os.kill(process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(2 * BEAT)  # a long pause: GC, swap, a suspended job
            os.kill(paused.pid, signal.SIGCONT)

            # Run 2 stays stopped past the limit: taken for dead (nobody can tell it from one).
            dozed = hosts.wait_status(2, "FAILED")
            silent_for = time.monotonic() - stopped
            assert hosts.record(1)["status"] == "RUNNING", hosts.record(1).get("fail_trace")
            dozing_run = dozed["meta"]["prefect"]["flow_run_id"]
            wait_for(
                lambda: flow_run_state(dozing_run).name == "Crashed", timeout=20, what="a Crashed flow run"
            )
            os.kill(dozing.pid, signal.SIGCONT)  # it wakes, beats, and completes: its true end
            wait_for(lambda: flow_run_state(dozing_run).name == "Running", timeout=20, what="Running again")
            hosts.flag(2).touch()
            completed = hosts.wait_status(2, "COMPLETED")

            assert hosts.record(1)["status"] == "RUNNING"
            os.kill(paused.pid, signal.SIGKILL)
            os.kill(local.pid, signal.SIGKILL)
            killed = time.monotonic()
            dead = hosts.wait_status(1, "FAILED")
            ended_after = time.monotonic() - killed
            state = wait_for(
                lambda: (
                    (st := flow_run_state(dead["meta"]["prefect"]["flow_run_id"])).name == "Crashed" and st
                ),
                timeout=30,
                what="the killed run's flow run to be marked Crashed",
            )
            dead_here = hosts.wait_status(3, "FAILED")
        finally:
            for process in (paused, dozing, local):
                process.kill()
                process.wait(10)
    print(f"paused run ended {silent_for:.1f} s into its pause, the killed one {ended_after:.1f} s after")
    assert silent_for < 3 * BEAT + 5
    heard_last = re.search(r"no heartbeat from host \S+ pid \d+ for (\d+) s", "".join(dozed["fail_trace"]))
    assert heard_last and int(heard_last[1]) >= 3 * BEAT, dozed["fail_trace"]  # never before its limit
    assert ended_after < 3 * BEAT + 3, f"ended {ended_after:.1f} s after the kill"
    trace = "".join(dead["fail_trace"])
    assert f"no heartbeat from host {socket.gethostname()} pid {paused.pid} for " in trace
    assert f"pid {dozing.pid}" in "".join(dozed["fail_trace"])
    assert completed["result"] > 0
    with sqlite3.connect(hosts.db) as conn:
        points = conn.execute("select count(*), max(step) from metric where run_id = '2'").fetchone()
    assert points[0] == points[1] + 1 >= completed["result"], "every point of the run taken for dead, once"
    steps = json.loads((hosts.runs / "2" / "metrics.json").read_text())["loss"]["steps"]
    assert steps == list(range(points[0])), "metrics.json too: before the watcher's end and after"
    assert sorted(hosts.sql_rows()) == [("1", "FAILED"), ("2", "COMPLETED"), ("3", "FAILED")]
    assert f"The process of this run (pid {local.pid}" in "".join(dead_here["fail_trace"])
    steps = json.loads((hosts.runs / "1" / "metrics.json").read_text())["loss"]["steps"]
    assert steps, "the killed run's metrics up to its last beat"

    killed_run = dead["meta"]["prefect"]["flow_run_id"]
    assert "no heartbeat from host" in (state.message or "")
    woken = wait_for(
        lambda: (st := flow_run_state(dozing_run)).is_final() and st,
        timeout=15,
        what="the woken run's flow run to end",
    )
    assert woken.name == "Completed", woken.message
    assert "beats again after it was ended as dead" in log.read_text()

    # The watcher publishes the summaries the dead runs could not, in the Prefect UI.
    assert "no heartbeat from host" in summary(killed_run, f"{hosts.name}-run-1")
    assert "The process of this run" in summary(
        dead_here["meta"]["prefect"]["flow_run_id"], f"{hosts.name}-run-3"
    )


def summary(flow_run_id: str, key: str) -> str:
    """The run summary published on flow run ``flow_run_id``, which says the run FAILED."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))
        )
    found = [str(artifact.data) for artifact in artifacts if artifact.key == key]
    assert len(found) == 1, [artifact.key for artifact in artifacts]
    assert "FAILED" in found[0]
    return found[0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def beat(key: str, number: int, **extra: Any) -> dict[str, Any]:
    return {"key": key, "beat": number, "interval": 10.0, "journal": True, **extra}


def look_until(beats: Any, clock: Clock, until: float) -> list[tuple[Any, float]]:
    """The watcher's loop looking every second until ``until``; what it found silent at the end."""
    found: list[tuple[Any, float]] = []
    while clock.now < until:
        clock.now = min(clock.now + 1.0, until)
        found = beats.silent()
        assert not found or clock.now == until, f"ended at {clock.now}"
    return found


def test_silence_counts_only_while_the_watcher_hears_and_never_before_three_beats() -> None:
    from prefect_sacred.watch.remote import RemoteBeats

    clock = Clock()
    beats = RemoteBeats(floor=0.0, local=lambda key: key == "here", clock=clock)
    beats.heard(beat("here", 1))  # its journal is on this machine: the lock says whether it lives
    beats.heard(beat("away", 1))
    assert len(beats) == 1
    assert look_until(beats, clock, 100.0) == []  # not connected yet: nothing heard, nothing counted
    beats.connected()
    assert look_until(beats, clock, 130.0) == []  # 3 beats of 10 s, counted from the connection
    assert [heard.payload["key"] for heard, _ in look_until(beats, clock, 130.5)] == ["away"]

    beats.heard(beat("away", 2))
    assert look_until(beats, clock, 140.0) == []
    clock.now = 200.0  # the watcher itself was stopped or asleep for a minute: it heard nothing then
    assert beats.silent() == []
    assert look_until(beats, clock, 230.0) == []
    assert len(look_until(beats, clock, 231.0)) == 1

    beats.disconnected()
    assert look_until(beats, clock, 500.0) == []


def test_a_run_taken_for_dead_that_beats_again_is_revived_and_an_ended_run_forgotten() -> None:
    from prefect_sacred.watch.remote import RemoteBeats

    clock = Clock()
    beats = RemoteBeats(floor=60.0, local=lambda key: False, clock=clock)
    beats.connected()
    beats.heard(beat("away", 1))
    assert look_until(beats, clock, 60.0) == []  # 3 beats are 30 s, the floor 60 s
    ((heard, silence),) = look_until(beats, clock, 61.0)
    assert silence == 61.0
    beats.ended(heard)
    assert look_until(beats, clock, 200.0) == []  # ended once
    assert beats.heard(beat("away", 1)) is None  # the stream replaying an old beat
    assert beats.heard(beat("away", 2)) is heard  # a new one: it lives
    assert look_until(beats, clock, 260.0) == []
    beats.heard(beat("away", 3, ended=True))
    assert len(beats) == 0
    assert look_until(beats, clock, 1000.0) == []


@pytest.mark.slow
def test_a_run_on_another_host_that_prefect_marks_crashed_is_ended_without_waiting_for_silence(
    tmp_path: Path,
) -> None:
    """Prefect's zombie detection (an automation) marks a dead run's flow run Crashed: the watcher
    ends the run then, with Prefect's message, long before its silence limit."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    hosts = Hosts(tmp_path)
    hosts.dead_after = 3600.0  # silence alone would take an hour
    with hosts.watcher():
        process = hosts.start(1)
        hosts.beating(1)
        process.kill()
        process.wait(10)
        assert hosts.record(1)["status"] == "RUNNING"
        flow_run_id = uuid.UUID(hosts.record(1)["meta"]["prefect"]["flow_run_id"])
        with get_client(sync_client=True) as client:
            zombie = Crashed(message="Flow run infrastructure exited without a heartbeat")
            client.set_flow_run_state(flow_run_id, zombie, force=True)
        record = hosts.wait_status(1, "FAILED", timeout=30)
    assert "Crashed: Flow run infrastructure exited without a heartbeat" in "".join(record["fail_trace"])
    assert [status for _, status in hosts.sql_rows()] == ["FAILED"]
