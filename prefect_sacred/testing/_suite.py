"""What every scenario of the contract suite builds on: the hooks a user overrides, and helpers."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.testing.records import RunRecord

if TYPE_CHECKING:
    from prefect_sacred.experiment import Experiment

T = TypeVar("T")

#: The experiment scripts the process scenarios run (``cli.py``, ``served.py``).
EXPERIMENTS = Path(__file__).resolve().parent / "_experiments"


class SuiteHooks:
    """The methods a subclass of ``ObserverContractSuite`` overrides, and the suite's helpers."""

    #: Seconds a process scenario waits for a subprocess or for a stored state.
    process_timeout: float = 90.0

    # --- override these ------------------------------------------------------------------

    def observer(self) -> ObserverLike:
        """A fresh observer writing into fresh, empty storage.

        Called once per scenario (a scenario may run several runs through the one observer).
        """
        raise NotImplementedError(f"{type(self).__name__} must define observer()")

    def read_run(self, run_id: Any) -> RunRecord:
        """Read run ``run_id`` back from the storage of the last ``observer()``.

        Read the storage itself, as another program would, not the observer's memory. Raise
        any exception while the run is not (yet) readable: scenarios that wait retry.

        Args:
            run_id: The run's ``_id``. Runs of other processes give their id as text, parsed
                back: digits become an ``int``, anything else stays a ``str``.
        """
        raise NotImplementedError(f"{type(self).__name__} must define read_run()")

    def observer_url(self) -> str | None:
        """The storage of the last ``observer()`` as an observer URL (``PREFECT_SACRED_OBSERVERS``).

        ``None`` (the default) skips the served-run scenario.
        """
        return None

    def observer_flags(self) -> list[str] | None:
        """Command-line flags adding an observer on the storage of the last ``observer()``.

        ``None`` (the default) skips the command-line scenarios.
        """
        return None

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """The environment of the experiment subprocesses (override to add ``PYTHONPATH``...).

        The default is this process's environment with ``PREFECT_API_URL`` set to the API
        this process uses, ``PREFECT_SACRED_OBSERVERS`` removed, and ``extra`` added.

        Args:
            **extra: Variables to set, e.g. ``PREFECT_SACRED_OBSERVERS`` for the serve process.
        """
        env = dict(os.environ)
        env.pop("PREFECT_SACRED_OBSERVERS", None)
        api_url = prefect_api_url()
        if api_url:
            env["PREFECT_API_URL"] = api_url
        env.update(extra)
        return env

    # --- helpers for the scenarios -------------------------------------------------------

    def experiment(self, name: str = "contract") -> Experiment:
        """An ``Experiment`` observed by a fresh ``observer()``."""
        from prefect_sacred import Experiment

        ex = Experiment(name)
        ex.observers.append(self.observer())
        return ex

    def require_processes(self, what: str, hook: str, value: Any) -> Any:
        """Skip the scenario when ``hook`` gave None or no Prefect server is configured."""
        if value is None:
            pytest.skip(f"{type(self).__name__}.{hook}() is None: {what} scenarios need it")
        if not prefect_api_url():
            pytest.skip(
                f"{what} scenarios need a Prefect API server (PREFECT_API_URL is not set, and an "
                "ephemeral API cannot be shared with subprocesses)"
            )
        return value

    def wait_for_run(
        self, run_id: Any, check: Callable[[RunRecord], bool], what: str, timeout: float | None = None
    ) -> RunRecord:
        """Read run ``run_id`` until ``check(record)`` holds; fail after ``timeout`` seconds."""

        def matching() -> RunRecord | None:
            record = self.read_run(run_id)
            return record if check(record) else None

        return wait_for(matching, timeout=timeout or self.process_timeout, interval=0.25, what=what)

    def python(self) -> str:
        """The interpreter that runs the experiment subprocesses."""
        return sys.executable


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to, or None for an ephemeral one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = "it"
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds.

    An exception from ``check`` counts as "not yet" (the storage may be mid-write).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except Exception as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})"
            )
        time.sleep(interval)


def parse_run_id(text: str) -> Any:
    """A run id as another process printed it: digits become an ``int``."""
    return int(text) if text.isdigit() and not text.startswith("0") else text


def run_id_in_output(text: str) -> Any:
    """The id in a run's ``Started run with ID "..."`` log line."""
    match = re.search(r'Started run with ID "([^"]+)"', text)
    assert match, f"no run id in the output:\n{text[-3000:]}"
    return parse_run_id(match.group(1))
