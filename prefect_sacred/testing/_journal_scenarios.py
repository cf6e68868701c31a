"""The contract's journal scenario: an observer rebuilt from the run's journal finishes the run.

A run keeps a journal of its events, and pickles there every observer that can ``reattach``, so
``prefect-sacred sync`` (or the process recording the end of a served run whose process died)
can rebuild it and deliver what it missed. Here a run's process "dies" after a beat (its journal
is let go without an end), and sync must finish the run in the observer's storage: every metric
point and all the output, then FAILED, saying the process died.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import pytest

from prefect_sacred.testing._suite import SuiteHooks
from prefect_sacred.testing.doubles import InjectedOutput


class JournalScenarios(SuiteHooks):
    """Pickling and ``reattach``, as the journal uses them."""

    def test_a_run_whose_process_died_is_finished_from_its_journal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from prefect_sacred.core.info import gather_experiment_info, gather_host_info
        from prefect_sacred.core.journal import resumable
        from prefect_sacred.core.run import Run
        from prefect_sacred.core.sync import sync_journal

        observer = self.observer()
        if not resumable(observer):
            pytest.skip(f"{type(observer).__name__} has no reattach: sync cannot resume its runs")
        pickle.loads(pickle.dumps(observer))  # the journal keeps it pickled
        monkeypatch.setenv("PREFECT_SACRED_JOURNAL_DIR", str(tmp_path / "journals"))
        run = Run(
            experiment_info=gather_experiment_info("journal", tempfile.gettempdir(), None),
            host_info=gather_host_info(),
            meta_info={"command": "main", "options": {}},
            config={"lr": 0.1, "seed": 1},
            command="main",
            observers=[observer],
            beat_interval=0,
            capture_mode="no",
        )
        run.start()
        assert run.start_error is None, run.start_error
        capture = InjectedOutput()
        run._capture = capture
        for step in range(5):
            run.log_scalar("loss", float(step))
        capture.pending = "epoch 1\n"
        run.beat()
        for step in range(5, 9):
            run.log_scalar("loss", float(step))
        capture.pending = "epoch 2, never beaten\n"
        run.tick()  # in the journal only, as when the process dies within a second
        journal = run.fanout.journal
        assert journal is not None
        # The process dies (here: its threads stop and it lets go of the journal, no end sent).
        if run._heartbeat is not None:
            run._heartbeat.stop()
        run.fanout.join(timeout=10)
        assert Path(journal.path).exists(), "a journal without the run's end was removed"
        report = sync_journal(journal.path)
        assert report.complete, report.lines()
        record = self.wait_for_run(run._id, lambda r: r.status != "RUNNING", "the run to be ended by sync")
        assert record.status == "FAILED"
        assert record.fail_trace and "died" in "".join(record.fail_trace)
        assert [float(v) for v in record.metrics["loss"]["values"]] == [float(step) for step in range(9)]
        assert "epoch 1\n" in record.captured_out and "epoch 2, never beaten\n" in record.captured_out
