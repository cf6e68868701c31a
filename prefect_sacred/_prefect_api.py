"""Long-lived synchronous Prefect clients for the threads that call Prefect beat after beat.

The run's UI observer and its beat-event sender each keep one client open for the run: opening
one costs about 0.1 s, and every request must have our timeout, not Prefect's 60 s default.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

__all__ = ["close_client", "open_client"]

logger = logging.getLogger("prefect_sacred")


def open_client(timeout: float) -> Any:
    """An entered ``SyncPrefectClient`` whose every request times out after ``timeout`` seconds."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    settings: dict[str, Any] = {"timeout": timeout}
    if str(PREFECT_API_URL.value() or "").startswith("http://"):
        # No TLS on this connection: spare Prefect loading every CA certificate (~50 ms).
        settings["verify"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client = get_client(httpx_settings=settings, sync_client=True)
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
