"""``ObserverContractSuite``: the rules of ``RunObserver`` as pytest scenarios, for any observer.

Each scenario runs a real experiment as a Prefect flow through your observer, then reads the run
back from your storage and checks what a reader would see. Subclass the suite in a test module,
in a class whose name starts with ``Test``, like Prefect's ``BlockStandardTestSuite``.
"""

from __future__ import annotations

from prefect_sacred.testing._journal_scenarios import JournalScenarios
from prefect_sacred.testing._process_scenarios import ProcessScenarios
from prefect_sacred.testing._run_scenarios import RunScenarios

__all__ = ["ObserverContractSuite"]


class ObserverContractSuite(RunScenarios, JournalScenarios, ProcessScenarios):
    """Every scenario of the observer contract; subclass it and say how to build and read.

    Override :meth:`observer` and :meth:`read_run`; override :meth:`observer_flags` and
    :meth:`observer_url` too when your observer has command-line flags or a URL scheme
    (registered through the ``prefect_sacred.observers`` entry points).

    Example:
        ```python
        import pytest
        from prefect_sacred.testing import ObserverContractSuite, RunRecord


        class TestMyObserver(ObserverContractSuite):
            @pytest.fixture(autouse=True)
            def _storage(self, tmp_path):
                self.root = tmp_path / "runs"  # pytest makes one instance per scenario

            def observer(self):
                return MyObserver(self.root)

            def read_run(self, run_id) -> RunRecord:
                stored = load_my_run(self.root, run_id)
                return RunRecord(status=stored["status"], config=stored["config"], ...)

            def observer_flags(self):  # optional: enables the command-line scenarios
                return ["--my_store", str(self.root)]

            def observer_url(self):  # optional: enables the served-run scenario
                return f"mystore://{self.root}"
        ```

    Scenarios run in this process (each uses one fresh ``observer()``):

    * a completed run: config, result, output (Python, fd level, subprocesses), info, meta,
      times; a run id given by the run (``--id``) is the one stored;
    * a failed run's trace as a list of lines; metrics and info logged just before the
      failure are all stored, with the final status;
    * a flow timeout is ``TIMEOUT``, a ``KeyboardInterrupt`` is ``INTERRUPTED``;
    * a live run is readable (``RUNNING``, info, output, metrics) before it ends;
    * metrics across several beats arrive complete and in order;
    * artifacts (also from another thread) and resources are stored; an artifact named
      ``../escape`` raises ``InvalidArtifactName`` to the caller and the others are stored;
    * two overlapping runs through one observer instance (the second gets a ``copy.copy``)
      keep their own config, info, metrics, output and result;
    * values JSON cannot express (numpy, datetimes, sets, your objects) do not crash the run
      (skipped without numpy); 20 MB of output are captured whole;
    * the observer pickles, and one rebuilt from the run's journal (``reattach``) finishes a
      run whose process died: every point and all output, then ``FAILED`` (skipped for an
      observer without ``reattach``, which ``prefect-sacred sync`` cannot resume).

    Scenarios in real processes, marked ``slow``, each skipped with its reason when its hook
    returns None or when no Prefect API server is configured (``PREFECT_API_URL`` unset: an
    ephemeral API cannot be shared with subprocesses):

    * SIGTERM and Ctrl-C of a command-line run are ``INTERRUPTED`` (``observer_flags()``);
    * a served run that is cancelled is ``INTERRUPTED``, one whose process gets SIGKILL is
      ``FAILED`` with the signal in its trace, both recorded by the serve process through
      ``reattach`` (``observer_url()``; one serve process, about 10 s);
    * a served run SIGKILLed mid-epoch, beating every 10 minutes, still has every metric point
      and line of output it produced until about a second before the kill (from its journal).

    Register the ``slow`` marker in your pytest configuration (``markers = ["slow: ..."]``;
    ``--strict-markers`` requires it) or accept pytest's warning about it; ``-m "not slow"``
    leaves the process scenarios out. The subprocesses inherit this process's environment
    (see :meth:`subprocess_env`), so the module registering your flags or URL scheme must be
    importable there (installed, or on ``PYTHONPATH``).

    Attributes:
        process_timeout: Seconds a process scenario waits for a subprocess or a stored state.
    """
