"""Backends for the contract suite: one module per observer, each a ``Backend`` subclass.

The contract suite (``prefect_sacred.testing.ObserverContractSuite``, subclassed in
tests/contract/) runs the same run scenarios against every backend listed in ``BACKENDS`` and
reads each run back through ``Backend.record`` into a ``RunRecord`` (re-exported here from
``prefect_sacred.testing``), so it never looks at a storage format; per-backend format tests
live in tests/observers/.

To add a backend: write ``tests/backends/<name>.py`` with a subclass, and add its import path to
``BACKENDS``. A backend whose server is missing raises ``BackendUnavailable`` from ``start`` (a
skip on a developer machine, a failure under CI=true).
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.testing.records import RunRecord

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "RunRecord", "load_backends"]

BACKENDS = [
    "tests.backends.file_storage:FileStorageBackend",
    "tests.backends.sql:SqliteBackend",
    "tests.backends.sql:PostgresBackend",
    "tests.backends.sql:MariaDbBackend",
    "tests.backends.tinydb:TinyDbBackend",
    "tests.backends.mongo:MongoBackend",
    "tests.backends.s3:S3Backend",
    "tests.backends.gcs:GcsBackend",
]


class BackendUnavailable(RuntimeError):
    """The backend's server cannot be reached here; the message says how to start it."""


class Backend:
    """One storage backend under test. Instances live for the whole test session."""

    name = "backend"

    def start(self, tmp_path_factory: Any) -> None:
        """Start servers (once per session). Raise BackendUnavailable if impossible here."""

    def stop(self) -> None:
        """Stop what ``start`` started."""

    def observer(self) -> RunObserver:
        """A fresh observer writing into this backend (a new, empty namespace per call is fine)."""
        raise NotImplementedError

    def url(self) -> str:
        """An observer URL for PREFECT_SACRED_OBSERVERS, same storage as the last ``observer()``."""
        raise NotImplementedError

    def cli_args(self) -> list[str]:
        """Command-line flags adding an observer on the same storage as the last ``observer()``."""
        raise NotImplementedError

    def record(self, run_id: Any) -> RunRecord:
        """Read run ``run_id`` back from the storage of the last ``observer()``."""
        raise NotImplementedError

    def run_ids(self) -> list[str]:
        """The ids (as strings) of every run in the storage of the last ``observer()``, read
        from the storage itself: a run stored twice under one id is listed twice where the
        storage allows it. The SQL backends share one database per session: every run in it."""
        raise NotImplementedError


def load_backends() -> list[Backend]:
    backends = []
    for path in BACKENDS:
        module_name, _, class_name = path.partition(":")
        backends.append(getattr(importlib.import_module(module_name), class_name)())
    return backends
