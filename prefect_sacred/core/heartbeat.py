"""The heartbeat: a daemon thread that calls ``beat()`` every ``interval`` seconds, and ``tick()``
every ``tick_interval`` seconds in between.

A daemon thread, not a Prefect task (the flow would wait for it) nor an asyncio task (it starves
while training code holds the event loop). The final beat at stop is the caller's job, made
synchronously after :meth:`Heartbeat.stop`, so it is ordered before the run's final event. The
tick is how a run's journal gets its metric points and output at least once a second, whatever
the beat interval: a beat hands observers what the ticks wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds (none when ``interval <= 0``) and ``tick`` every
    ``tick_interval`` seconds between beats, on a daemon thread until stopped."""

    def __init__(
        self,
        interval: float,
        beat: Callable[[], None],
        name: str = "heartbeat",
        *,
        tick: Callable[[], None] | None = None,
        tick_interval: float = 1.0,
    ) -> None:
        self.interval = interval
        self.tick_interval = tick_interval
        self._beat = beat
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"prefect-sacred-{name}")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        beats = self.interval > 0
        next_beat = time.monotonic() + self.interval if beats else float("inf")
        while True:
            now = time.monotonic()
            wait = next_beat - now
            if self._tick is not None:
                wait = min(wait, self.tick_interval)
            if self._stop.wait(max(wait, 0.0)):
                return
            now = time.monotonic()
            call = self._beat if now >= next_beat else self._tick
            if call is self._beat:
                next_beat = now + self.interval
            try:
                if call is not None:
                    call()
            except Exception:  # a beat must never kill the thread: the next one may succeed
                logger.exception("heartbeat failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop beating. Waits up to ``timeout`` for a beat in progress, never forever."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("a heartbeat is still in progress after %.0f s; not waiting", timeout)
