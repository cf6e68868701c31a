"""The one place that opens Prefect API clients, all with one timeout.

Prefect's default is 60 s per request; a run, a hook or the watcher must never wait that long
on an orchestrator that is slow or away, so every client here times out after
:func:`api_timeout` seconds (``PREFECT_SACRED_API_TIMEOUT``, default 10).

* :func:`sync_client` for a few calls (``with sync_client() as client: ...``);
* :func:`open_client` / :func:`close_client` for threads that call Prefect beat after beat
  (the run's UI observer, its beat-event sender, the sweep publisher): opening a client costs
  about 0.1 s.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["API_TIMEOUT_ENV_VAR", "api_timeout", "close_client", "open_client", "sync_client"]

logger = logging.getLogger("prefect_sacred")

API_TIMEOUT_ENV_VAR = "PREFECT_SACRED_API_TIMEOUT"
_DEFAULT_TIMEOUT = 10.0


def api_timeout() -> float:
    """Seconds one request to the Prefect API may take (``PREFECT_SACRED_API_TIMEOUT``, default 10)."""
    text = os.environ.get(API_TIMEOUT_ENV_VAR, "").strip()
    try:
        value = float(text) if text else _DEFAULT_TIMEOUT
    except ValueError:
        logger.warning(
            "%s=%r is not a number of seconds; using %s", API_TIMEOUT_ENV_VAR, text, _DEFAULT_TIMEOUT
        )
        return _DEFAULT_TIMEOUT
    return value if value > 0 else _DEFAULT_TIMEOUT


def sync_client(timeout: float | None = None) -> SyncPrefectClient:
    """A ``SyncPrefectClient`` (a context manager) whose every request times out."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    settings: dict[str, Any] = {"timeout": api_timeout() if timeout is None else timeout}
    if str(PREFECT_API_URL.value() or "").startswith("http://"):
        # No TLS on this connection: spare Prefect loading every CA certificate (~50 ms).
        settings["verify"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return get_client(httpx_settings=settings, sync_client=True)


def open_client(timeout: float | None = None) -> Any:
    """An entered :func:`sync_client`, to keep open; close it with :func:`close_client`."""
    client = sync_client(timeout)
    client.__enter__()
    return client


def close_client(client: Any) -> None:
    """Close a client from :func:`open_client`; a broken connection is nothing to report."""
    if client is None:
        return
    try:
        client.__exit__(None, None, None)
    except Exception as exc:
        logger.debug("closing the Prefect client: %s", exc)
