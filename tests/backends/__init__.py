"""Backends for the contract suite: one module per observer, each a ``Backend`` subclass.

The contract suite (tests/contract/) runs the same run scenarios against every backend listed in
``BACKENDS`` and reads each run back through ``Backend.record`` into a ``RunRecord``, so it never
looks at a storage format; per-backend format tests live in tests/observers/.

To add a backend: write ``tests/backends/<name>.py`` with a subclass, and add its import path to
``BACKENDS``. A backend whose server is missing raises ``BackendUnavailable`` from ``start`` (a
skip on a developer machine, a failure under CI=true).
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.observers.base import RunObserver

BACKENDS = [
    "tests.backends.file_storage:FileStorageBackend",
    "tests.backends.sql:SqliteBackend",
    "tests.backends.sql:PostgresBackend",
    "tests.backends.sql:MariaDbBackend",
    "tests.backends.tinydb:TinyDbBackend",
    "tests.backends.mongo:MongoBackend",
]


class BackendUnavailable(RuntimeError):
    """The backend's server cannot be reached here; the message says how to start it."""


@dataclass
class RunRecord:
    """A stored run, as every backend can report it."""

    status: str
    config: dict[str, Any]
    info: dict[str, Any]
    result: Any
    captured_out: str
    heartbeat: dt.datetime | None
    start_time: dt.datetime | None
    stop_time: dt.datetime | None
    fail_trace: list[str] | None
    #: ``{name: {"steps": [...], "values": [...]}}``
    metrics: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    #: ``{artifact name: content}``
    artifacts: dict[str, bytes] = field(default_factory=dict)
    #: base names of the recorded resources
    resources: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


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


def load_backends() -> list[Backend]:
    backends = []
    for path in BACKENDS:
        module_name, _, class_name = path.partition(":")
        backends.append(getattr(importlib.import_module(module_name), class_name)())
    return backends
