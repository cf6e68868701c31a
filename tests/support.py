"""Helpers shared by the tests: service checks, waiting, subprocess environments."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

# Stands in for a run's fd capture (shared with the contract suite's journal scenario).
from prefect_sacred.testing.doubles import InjectedOutput

__all__ = ["InjectedOutput"]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
T = TypeVar("T")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_missing(reason: str) -> None:
    """A local service is not running: skip on a developer machine, fail under CI=true."""
    if under_ci():
        pytest.fail(f"required service missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # the backend may not have the record yet
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def subprocess_env(**extra: Any) -> dict[str, str]:
    """The environment for experiment subprocesses: this session's Prefect server, the repo on
    the path, and no inherited observer settings."""
    env = dict(os.environ)
    env.pop("PREFECT_SACRED_OBSERVERS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update({key: str(value) for key, value in extra.items()})
    return env


@contextmanager
def serving(script: Path, name: str, deployment: str, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """``python script name`` serving ``deployment`` from ``cwd`` (its output in serve.log there);
    yields the deployment's name once Prefect has it, and stops the process after."""
    from prefect.client.orchestration import get_client

    log = open(cwd / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [PYTHON, str(script), name],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip

    def deployed() -> bool:
        assert serve.poll() is None, (cwd / "serve.log").read_text()[-3000:]
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(deployment)
        return True

    try:
        wait_for(deployed, timeout=60, interval=0.5, what="the served deployment")
        yield deployment
    finally:
        serve.terminate()
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
