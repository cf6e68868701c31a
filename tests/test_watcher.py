"""``prefect-sacred watch``, for real: two watchers backfilling and following the event stream
give each waiting flow run one QUEUED record; a queued run cancelled or deleted before it starts
becomes INTERRUPTED."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.servers.fake_slack import FakeSlack
from tests.support import PYTHON, wait_for
from tests.test_queue_runs import Setup, deployment_id


@contextmanager
def watcher(setup: Setup, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [PYTHON, "-m", "prefect_sacred.cli", "watch", str(setup.script)],
            env=setup.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(20)


@pytest.mark.slow
def test_two_watchers_give_one_queued_record_and_end_cancelled_and_deleted_ones(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Scheduled

    setup = Setup(tmp_path)
    setup.deploy()
    later = Scheduled(scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with get_client(sync_client=True) as client:
        # Created before any watcher runs: both backfill it at once.
        waiting = client.create_flow_run_from_deployment(
            deployment_id(setup.name), parameters={"epochs": 5}, state=later
        )
    with ExitStack() as stack:
        for number in (1, 2):
            stack.enter_context(watcher(setup, tmp_path / f"watcher{number}.log"))
        setup.wait_status(1, "QUEUED", timeout=60)
        assert setup.config(1)["epochs"] == 5
        time.sleep(3)  # both watchers had their chance at it
        with get_client(sync_client=True) as client:
            created = time.monotonic()
            streamed = client.create_flow_run_from_deployment(deployment_id(setup.name), state=later)
            setup.wait_status(2, "QUEUED", timeout=30)
            latency = time.monotonic() - created
            time.sleep(3)
            assert sorted(path.name for path in setup.runs.iterdir() if path.name.isdigit()) == ["1", "2"]
            assert [status for _, status, _ in setup.sql_rows()] == ["QUEUED", "QUEUED"]
            labels = client.read_flow_run(waiting.id).labels
            assert labels["prefect-sacred.queued-id"] == 1

            client.set_flow_run_state(waiting.id, Cancelled(), force=True)
            cancelled = setup.wait_status(1, "INTERRUPTED", timeout=30)
            client.delete_flow_run(streamed.id)
            setup.wait_status(2, "INTERRUPTED", timeout=30)
    print(f"QUEUED {latency:.2f} s after creation")
    assert latency < 10, f"recorded {latency:.1f} s after the flow run was created"
    assert "stop_time" in cancelled
    assert [status for _, status, _ in setup.sql_rows()] == ["INTERRUPTED", "INTERRUPTED"]


@pytest.mark.slow
def test_a_killed_plain_run_is_ended_within_three_beats_and_notified_once_and_a_paused_one_is_not(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client

    beat = 2.0
    slack = FakeSlack()
    slack.start()
    setup = Setup(tmp_path, TEST_SLACK_URL=slack.url)  # the watcher's experiment has it too
    log = tmp_path / "watcher.log"
    with watcher(setup, log), ExitStack() as cleanup:
        cleanup.callback(slack.stop)
        wait_for(lambda: "watching runs of flow" in log.read_text(), timeout=60, what="the watcher")
        run = subprocess.Popen(
            [PYTHON, str(setup.script), "-b", str(beat), "with", "epochs=2000", "pause=0.02"],
            env=setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: setup.record(1)["heartbeat"], timeout=60, what="the run's first beat")
            os.kill(run.pid, signal.SIGSTOP)  # a long pause: GC, swap, a laptop asleep
            time.sleep(2.25 * beat)
            paused = setup.record(1)["status"]
            os.kill(run.pid, signal.SIGCONT)
            time.sleep(beat)
            after = setup.record(1)
            assert (paused, after["status"]) == ("RUNNING", "RUNNING"), after.get("fail_trace")
            os.kill(run.pid, signal.SIGKILL)
            killed = time.monotonic()
            record = setup.wait_status(1, "FAILED", timeout=30)
            ended_after = time.monotonic() - killed
            flow_run_id = record["meta"]["prefect"]["flow_run_id"]
            with get_client(sync_client=True) as client:
                state = wait_for(
                    lambda: (st := client.read_flow_run(flow_run_id).state) and st.name == "Crashed" and st,
                    timeout=10,
                    what="the flow run to be marked Crashed",
                )
            wait_for(slack.texts, timeout=20, what="the Slack message")
            time.sleep(beat)  # a second message would come meanwhile
        finally:
            run.kill()
            run.wait(10)
    print(f"ended {ended_after:.2f} s after the kill")
    assert ended_after < 3 * beat, f"ended {ended_after:.1f} s after the kill"
    assert f"The process of this run (pid {run.pid}" in "".join(record["fail_trace"])
    steps = json.loads((setup.runs / "1" / "metrics.json").read_text())["loss"]["steps"]
    assert len(steps) > 50  # the journal's last points, delivered before the end
    assert [status for _, status, _ in setup.sql_rows()] == ["FAILED"]
    assert "found by prefect-sacred's watcher" in (state.message or "")
    [text] = slack.texts()  # once: not from both the journal's observer and the experiment's
    assert "failed" in text.lower() and setup.name in text, text


@pytest.mark.slow
def test_watch_names_a_missing_experiment_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "prefect_sacred.cli", "watch", str(tmp_path / "nope.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"prefect-sacred watch: error: no such file: {tmp_path / 'nope.py'}"


def test_claims_at_once_give_one_claimer_and_a_start_waits_for_the_queued_id() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from prefect_sacred.flows.claims import QUEUED_ID_LABEL, claim_flow_run, queued_id, release_claim

    @flow(name=f"claimed-{uuid.uuid4().hex[:8]}")
    def claimed() -> None:
        pass

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(claimed)
    won: list[bool] = []
    claimers = [threading.Thread(target=lambda: won.append(claim_flow_run(flow_run.id))) for _ in range(4)]
    for claimer in claimers:
        claimer.start()
    for claimer in claimers:
        claimer.join()
    assert sorted(won) == [False, False, False, True]
    assert claim_flow_run(flow_run.id) is False  # a later claimer sees the claim

    def label_later() -> None:
        time.sleep(0.5)
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(flow_run.id, {QUEUED_ID_LABEL: 7})

    labeller = threading.Thread(target=label_later)
    labeller.start()
    with get_client(sync_client=True) as client:
        started = time.monotonic()
        assert queued_id(client.read_flow_run(flow_run.id)) == 7
    labeller.join()
    assert time.monotonic() - started < 5
    release_claim(flow_run.id)
    assert claim_flow_run(flow_run.id) is False  # labelled: nobody claims it again


@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_watch_refuses_a_dead_after_that_is_not_seconds_in_one_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect_sacred.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["watch", "--dead-after", value, "exp.py"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"prefect-sacred watch: error: argument --dead-after: not a number of seconds: {value!r}"
