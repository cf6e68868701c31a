"""The run-local write-ahead journal: nothing a run recorded is lost when a backend is away or
the process dies, and ``prefect-sacred sync`` delivers what is left.

* :class:`RunJournal`: one run's journal on local disk (records, observers, delivery cursors);
* :class:`DeliveryWorker`: one observer's events, delivered in order with retries;
* :func:`sync_journal`: deliver what a journal holds to the observers that have not received it.
"""

from __future__ import annotations

from prefect_sacred.journal.delivery import Delivery, DeliveryWorker
from prefect_sacred.journal.journal import (
    JOURNAL_DIR_ENV_VAR,
    JOURNAL_ENV_VAR,
    JournalLocked,
    RunJournal,
    journal_enabled,
    journal_root,
)
from prefect_sacred.journal.sync import SyncReport, sync_journal

__all__ = [
    "JOURNAL_DIR_ENV_VAR",
    "JOURNAL_ENV_VAR",
    "Delivery",
    "DeliveryWorker",
    "JournalLocked",
    "RunJournal",
    "SyncReport",
    "journal_enabled",
    "journal_root",
    "sync_journal",
]
