"""The contract's real-process scenarios: command-line runs stopped by a signal, served runs
cancelled or killed.

A served run's cancellation and the SIGKILL of its process fire hooks in the serve process,
which rebuilds the observers from ``PREFECT_SACRED_OBSERVERS`` and reads the run's id back from
the flow run's labels: only an observer whose ``reattach`` finds the run can record its end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.testing._suite import EXPERIMENTS, SuiteHooks, parse_run_id, run_id_in_output, wait_for


def _default_sigint() -> None:
    # A non-interactive shell starts children with SIGINT ignored; a terminal would not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ProcessScenarios(SuiteHooks):
    """Scenarios in subprocesses, on the storage of ``observer_flags()`` or ``observer_url()``."""

    @pytest.mark.slow
    @pytest.mark.parametrize("mode", ["sigterm", "sigint"])
    def test_sigterm_or_ctrl_c_of_a_command_line_run_is_recorded_as_interrupted(
        self, mode: str, tmp_path: Path
    ) -> None:
        self.observer()  # fresh storage for this run
        flags = self.require_processes("command-line", "observer_flags", self.observer_flags())
        done = subprocess.run(
            [self.python(), str(EXPERIMENTS / "cli.py"), "with", f"mode={mode}", *flags],
            capture_output=True,
            text=True,
            timeout=self.process_timeout,
            env=self.subprocess_env(),
            cwd=tmp_path,
            preexec_fn=_default_sigint,
        )
        output = done.stderr + done.stdout
        assert done.returncode != 0, output[-3000:]
        run_id = run_id_in_output(output)
        record = wait_for(lambda: self.read_run(run_id), timeout=10, what=f"run {run_id!r} in the storage")
        assert record.status == "INTERRUPTED", output[-3000:]
        assert f"cli run {mode}" in record.captured_out, (record.captured_out[-2000:], output[-3000:])
        assert record.stop_time is not None

    @pytest.mark.slow
    def test_a_served_run_cancelled_or_killed_is_recorded_by_the_serve_process(self, tmp_path: Path) -> None:
        self.observer()  # fresh storage for the serve process and its runs
        url = self.require_processes("served-run", "observer_url", self.observer_url())
        with self._serving(url, tmp_path) as deployment:
            # Both runs at once: the second one's process starts while the first is cancelled.
            cancelled, killed = self._create_served_run(deployment), self._create_served_run(deployment)

            # Cancelled: the serve process's cancellation hook records INTERRUPTED.
            run_id = self._served_run_id(cancelled)
            assert (
                wait_for(lambda: self.read_run(run_id), what="the served run in the storage").status
                == "RUNNING"
            )
            self._cancel(cancelled)
            record = self.wait_for_run(
                run_id, lambda r: r.status == "INTERRUPTED", "the cancelled run to be recorded as INTERRUPTED"
            )
            assert record.stop_time is not None

            # Killed: the serve process's crash hook records FAILED, naming the signal.
            run_id = self._served_run_id(killed)
            pid = wait_for(lambda: self.read_run(run_id).info.get("pid"), timeout=30, what="the run's pid")
            os.kill(int(pid), signal.SIGKILL)
            record = self.wait_for_run(
                run_id, lambda r: r.status != "RUNNING", "the killed run to leave RUNNING"
            )
            assert record.status == "FAILED"
            assert record.fail_trace and "SIGKILL" in "".join(record.fail_trace)
            assert record.stop_time is not None

    @pytest.mark.slow
    def test_a_served_run_killed_mid_epoch_keeps_what_it_logged_until_a_second_before(
        self, tmp_path: Path
    ) -> None:
        self.observer()  # fresh storage for the serve process and its runs
        url = self.require_processes("served-run", "observer_url", self.observer_url())
        progress = tmp_path / "progress"

        def lines() -> list[str]:
            return progress.read_text().splitlines() if progress.exists() else []

        # Beats every 10 minutes: only the run's journal can carry its points and output.
        with self._serving(url, tmp_path, CONTRACT_BEAT_INTERVAL="600") as deployment:
            _, run_id = self._start_served_run(deployment, progress=str(progress))
            wait_for(lambda: len(lines()) > 40, timeout=self.process_timeout, what="40 epochs")
            os.kill(int(lines()[0]), signal.SIGKILL)
            killed_at = time.time()
            record = self.wait_for_run(
                run_id, lambda r: r.status != "RUNNING", "the killed run to leave RUNNING"
            )
        assert record.status == "FAILED"
        logged = [line.split() for line in lines()[1:]]
        old_enough = [float(step) for step, stamp in logged if float(stamp) < killed_at - 1.5]
        values = [float(value) for value in record.metrics.get("loss", {}).get("values", [])]
        assert values[: len(old_enough)] == old_enough, (len(values), len(old_enough))
        assert f"step {int(old_enough[-1])}\n" in record.captured_out, record.captured_out[-500:]

    @contextmanager
    def _serving(self, url: str, workdir: Path, **env: str) -> Iterator[str]:
        """A serve process for ``served.py`` whose observers come from ``url``; yields its name."""
        from prefect_sacred.prefect_client import sync_client

        deployment = f"contract-{uuid.uuid4().hex[:10]}"
        log_path = workdir / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [self.python(), str(EXPERIMENTS / "served.py"), deployment],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=self.subprocess_env(PREFECT_SACRED_OBSERVERS=url, **env),
                start_new_session=True,
            )

            def deployment_exists() -> bool:
                assert process.poll() is None, "the serve process exited"
                with sync_client() as client:
                    client.read_deployment_by_name(f"served/{deployment}")
                return True

            try:
                wait_for(
                    deployment_exists,
                    timeout=self.process_timeout,
                    interval=0.2,
                    what="the served deployment",
                )
                yield f"served/{deployment}"
            except BaseException:
                log.flush()
                print(
                    f"--- serve process log ({log_path}) ---\n{log_path.read_text(errors='replace')[-5000:]}"
                )
                raise
            finally:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)

    def _start_served_run(self, deployment: str, **parameters: Any) -> tuple[Any, Any]:
        """Create a run of the deployment; return (flow run id, experiment run id) once it runs."""
        flow_run_id = self._create_served_run(deployment, **parameters)
        return flow_run_id, self._served_run_id(flow_run_id)

    def _create_served_run(self, deployment: str, **parameters: Any) -> Any:
        """Create a run of the deployment (60 s long unless told); return its flow run id."""
        from prefect.deployments import run_deployment

        flow_run: Any = run_deployment(deployment, parameters={"seconds": 60, **parameters}, timeout=0)
        return flow_run.id

    def _served_run_id(self, flow_run_id: Any) -> Any:
        """The experiment run id of a served flow run, once the run has started."""
        from prefect_sacred.flows.labels import RUN_ID_LABEL
        from prefect_sacred.prefect_client import sync_client

        def labelled() -> Any:
            with sync_client() as client:
                return (client.read_flow_run(flow_run_id).labels or {}).get(RUN_ID_LABEL)

        run_id = wait_for(
            labelled, timeout=self.process_timeout, interval=0.2, what="the served run to start"
        )
        return parse_run_id(str(run_id))

    def _cancel(self, flow_run_id: Any) -> None:
        """Cancel a flow run as ``prefect flow-run cancel`` does: set its state to Cancelling."""
        from prefect.client.schemas.objects import State, StateType
        from prefect.client.schemas.responses import SetStateStatus

        from prefect_sacred.prefect_client import sync_client

        with sync_client() as client:
            result = client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING))
        assert result.status == SetStateStatus.ACCEPT, result.details
