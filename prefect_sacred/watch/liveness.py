"""Dead runs found: runs whose process died without recording their end, ended in every backend.

How the watcher learns that a run is alive: not from heartbeat timing (a GC pause, a slow
backend or a laptop that slept would look like death) but from the run's journal on this
machine. A live run's process holds its journal's ``flock`` for as long as it exists, also while
stopped (SIGSTOP) or suspended; the kernel releases it the moment the process dies, however it
dies (SIGKILL, the OOM killer). So a journal of the experiment whose lock is free and whose
log has no end is a dead run: :func:`~prefect_sacred.core.sync.sync_journal` delivers what
it still holds (metric points and output up to about a second before the death), then
``failed_event`` with a trace naming the process. A journal whose run ended but whose
observers did not receive everything is delivered again, at most every ``retry_every`` seconds.

Cost, per check (every second by default): one directory listing of the journal root, and per
journal of the experiment the first line of its log and one non-blocking ``flock`` attempt. No
call to Prefect or to any backend unless a run died. Runs on other machines are followed by the
beat events they send to Prefect (see :mod:`prefect_sacred.watch.remote`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect_sacred.core.journal import JournalLocked, RunJournal
from prefect_sacred.core.sync import SyncReport, sync_journal

__all__ = ["DeadRunFinder"]

logger = logging.getLogger("prefect_sacred.watch")


class DeadRunFinder:
    """Ends the runs of experiment ``experiment_name`` on this machine whose process died.

    Args:
        experiment_name: Only journals of runs of this experiment are considered.
        retry_every: Seconds before a journal whose observers could not take everything is
            delivered again.
        root: The journal directory (default: ``PREFECT_SACRED_JOURNAL_DIR`` or its default).
        defer: Called with a dead run's identity before anything is done; True leaves the run
            alone for now (its serve process or worker records its end, cancelled or crashed).
        resume: Gives the context a dead run's journal is delivered in (given its identity),
            such as :func:`~prefect_sacred.observers.base.resuming` for the Prefect UI's summary.
    """

    def __init__(
        self,
        experiment_name: str,
        retry_every: float = 60.0,
        root: str | None = None,
        defer: Callable[[dict[str, Any]], bool] | None = None,
        resume: Callable[[dict[str, Any]], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.experiment_name = experiment_name
        self.defer = defer
        self.resume = resume
        self.retry_every = retry_every
        self.root = root
        self._host = socket.gethostname()
        self._not_before: dict[str, float] = {}

    def check(self) -> list[tuple[dict[str, Any], SyncReport]]:
        """Deliver and end every dead run's journal; returns each run's identity and delivery."""
        reports = []
        now = time.monotonic()
        for path in RunJournal.all(self.root):
            identity = RunJournal.identity(path)
            if self._not_before.get(path, 0.0) > now or identity is None or not self._mine(identity):
                continue
            if RunJournal.is_held(path):  # its process lives, stopped or not
                continue
            if self.defer is not None and self.defer(identity):
                continue
            try:
                with self.resume(identity) if self.resume is not None else nullcontext():
                    report = sync_journal(path)
            except (FileNotFoundError, JournalLocked):  # ended and deleted meanwhile, or just taken
                continue
            if report.skipped is not None:  # taken again meanwhile (a hook delivering it)
                continue
            reports.append((identity, report))
            for line in report.lines():
                logger.info("%s", line)
            if not report.deleted:
                self._not_before[path] = now + self.retry_every
        return reports

    def _mine(self, identity: dict[str, Any]) -> bool:
        return bool(
            identity.get("experiment") == self.experiment_name and identity.get("host") in (None, self._host)
        )
