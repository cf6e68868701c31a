"""The one place that opens Prefect API clients, all with one timeout.

Prefect's default is 60 s per request, and its client tries a request that timed out 5 more
times with pauses of 2, 4, 8, 16 and 32 s: over 7 minutes against a silent server. A run, a hook
or the watcher must never wait that long on an orchestrator that is slow or away, so every client
here times out after :func:`api_timeout` seconds (``PREFECT_SACRED_API_TIMEOUT``, default 10)
and tries a request at most twice (a blip is ridden out, an outage costs about 2 timeouts + 2 s).

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
#: Prefect's client retries after the first try (its setting, PREFECT_CLIENT_MAX_RETRIES, is 5).
_RETRIES = 1


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
    return _bounded_retries(get_client(httpx_settings=settings, sync_client=True))


def _bounded_retries(client: SyncPrefectClient) -> SyncPrefectClient:
    """``client``, its requests retried at most :data:`_RETRIES` times, whatever thread sends them.

    Prefect reads its retry setting at each request, from the sending context's settings: each
    request here runs with ours.
    """
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    http = getattr(client, "_client", None)
    send = getattr(http, "send", None)
    if send is None:  # another Prefect: its own retries
        return client

    def send_bounded(*args: Any, **kwargs: Any) -> Any:
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: _RETRIES}):
            return send(*args, **kwargs)

    http.send = send_bounded  # type: ignore[union-attr]
    return client


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
