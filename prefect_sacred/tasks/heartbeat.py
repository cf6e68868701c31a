"""The heartbeat: a daemon thread that calls ``beat()`` every ``interval`` seconds.

A daemon thread, not a Prefect task (the flow would wait for it) nor an asyncio task (it starves
while training code holds the event loop). The final beat at stop is the caller's job, made
synchronously after :meth:`Heartbeat.stop`, so it is ordered before the run's final event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds on a daemon thread until stopped."""

    def __init__(self, interval: float, beat: Callable[[], None], name: str = "heartbeat") -> None:
        self.interval = interval
        self._beat = beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"prefect-sacred-{name}")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # a beat must never kill the thread: the next one may succeed
                logger.exception("heartbeat failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop beating. Waits up to ``timeout`` for a beat in progress, never forever."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("a heartbeat is still in progress after %.0f s; not waiting", timeout)
