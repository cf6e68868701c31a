"""The project's own observers under the shipped contract suite, as a user would run it.

Every backend of tests/backends/ runs every scenario of
``prefect_sacred.testing.ObserverContractSuite``, once directly and once wrapped in a
``QueueObserver`` (in-process scenarios only: the queued variant has no flags or URL).
"""

from __future__ import annotations

from typing import Any

import pytest

from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.queue import QueueObserver
from prefect_sacred.testing import ObserverContractSuite, RunRecord
from tests.backends import Backend
from tests.support import subprocess_env


class TestObserverContract(ObserverContractSuite):
    """Each backend's observer, its flags and its URL."""

    @pytest.fixture(autouse=True)
    def _use_backend(self, backend: Backend) -> None:
        self.backend = backend

    def observer(self) -> ObserverLike:
        return self.backend.observer()

    def read_run(self, run_id: Any) -> RunRecord:
        return self.backend.record(run_id)

    def observer_url(self) -> str | None:
        return self.backend.url()

    def observer_flags(self) -> list[str] | None:
        return self.backend.cli_args()

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        return subprocess_env(**extra)


class TestQueuedObserverContract(ObserverContractSuite):
    """Each backend's observer behind a ``QueueObserver`` (test ids ``queued_<backend>``)."""

    backend_id_prefix = "queued_"

    @pytest.fixture(autouse=True)
    def _use_backend(self, backend: Backend) -> None:
        self.backend = backend

    def observer(self) -> ObserverLike:
        return QueueObserver(self.backend.observer(), interval=0.05, retry_interval=0.05, join_timeout=30)

    def read_run(self, run_id: Any) -> RunRecord:
        return self.backend.record(run_id)
