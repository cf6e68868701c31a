"""A background sender for notifications: off the run's thread, with timeouts, bounded retries,
Retry-After, and secrets kept out of every message.

One :class:`BackgroundSender` serves one run of one observer. Its daemon thread delivers the
messages in order; ``join`` waits a bounded time and returns what could not be delivered, which
the observer reports as a :class:`NotificationError` (the run counts it in ``observer_errors``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BackgroundSender",
    "Message",
    "NotificationError",
    "PermanentFailure",
    "RetryLater",
    "SecretScrubber",
]

logger = logging.getLogger("prefect_sacred.notify")


class NotificationError(RuntimeError):
    """Messages of a run that were not delivered (raised by ``join``, never during the run)."""


class RetryLater(Exception):
    """The service asked to wait ``seconds`` before the next attempt (HTTP 429, ``retry_after``)."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = max(0.0, float(seconds))


class PermanentFailure(Exception):
    """Retrying cannot help (a revoked webhook, an unknown chat, a bad token)."""


@dataclass
class Message:
    """One notification: the event it reports and what to send."""

    event: str
    text: str
    options: dict[str, Any] = field(default_factory=dict)


class SecretScrubber(logging.Filter):
    """Replaces known secrets (webhook URLs, bot tokens, proxy passwords) with ``***``.

    Used on every text an observer logs or raises, and installed as a filter on the loggers of
    the HTTP libraries (httpx logs each request's URL, which holds a bot's token).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def scrub(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


#: The one scrubber of the process; observers register their secrets with it when built.
SCRUBBER = SecretScrubber()
_FILTERED_LOGGERS = ("httpx", "httpcore", "urllib3", "requests", "telegram", "prefect_sacred.notify")


def protect(*secrets: str | None) -> None:
    """Register ``secrets`` and make sure the HTTP libraries' loggers never show them.

    A logger's filter does not apply to its children, so every logger of those libraries that
    exists now gets the scrubber (observers call this after importing their client library).
    """
    SCRUBBER.add(*secrets)
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in _FILTERED_LOGGERS or name.startswith("prefect_sacred.notify")
    ]
    for name in {*_FILTERED_LOGGERS, *names}:
        log = logging.getLogger(name)
        if SCRUBBER not in log.filters:
            log.addFilter(SCRUBBER)


def describe(exc: BaseException) -> str:
    """An exception as one line, secrets hidden."""
    from prefect_sacred.utils import redact

    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(SCRUBBER.scrub(text))


class BackgroundSender:
    """Delivers the messages of one run from a daemon thread, in order.

    Args:
        owner: The observer's name, in every log line.
        deliver: Sends one message, in the sender's thread; raises :class:`RetryLater`,
            :class:`PermanentFailure` or any exception (retried).
        close: Called in the sender's thread after the last message (closes clients).
        attempts: Tries per message, rate-limit waits included.
        backoff: Seconds before the second try; doubled for each later one.
        max_wait: The longest wait a ``Retry-After`` may ask for.
    """

    def __init__(
        self,
        owner: str,
        deliver: Callable[[Message], None],
        close: Callable[[], None] | None = None,
        attempts: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
    ) -> None:
        self.owner = owner
        self._deliver = deliver
        self._close = close
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_wait = max_wait
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        #: Messages given up on: ``"<event>: <reason>"``.
        self.failures: list[str] = []
        #: Messages delivered.
        self.delivered: list[Message] = []

    def submit(self, message: Message) -> None:
        """Queue ``message``; returns at once."""
        with self._lock:
            if self._closed:
                self.failures.append(f"{message.event}: sent after join")
                return
            self._queue.put(message)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"prefect-sacred-{self.owner}", daemon=True
                )
                self._thread.start()

    def join(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for the queued messages; return those not delivered."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                pending = self._queue.qsize() + 1  # the one being sent, and those waiting
                self.failures.append(f"{pending} message(s) still unsent after {timeout:g} s")
        return list(self.failures)

    def _work(self) -> None:
        try:
            while True:
                message = self._queue.get()
                if message is None:
                    return
                self._send(message)
        finally:
            if self._close is not None:
                try:
                    self._close()
                except Exception as exc:
                    logger.debug("%s: closing the client failed: %s", self.owner, describe(exc))

    def _send(self, message: Message) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._deliver(message)
            except RetryLater as exc:
                wait, reason = min(exc.seconds, self.max_wait), SCRUBBER.scrub(str(exc))
            except PermanentFailure as exc:
                self._give_up(message, describe(exc), attempt)
                return
            except Exception as exc:
                wait, reason = self.backoff * 2 ** (attempt - 1), describe(exc)
            else:
                self.delivered.append(message)
                return
            if attempt == self.attempts:
                self._give_up(message, reason, attempt)
                return
            logger.warning(
                "%s: the %s message failed (attempt %d of %d): %s; retrying in %.1f s",
                self.owner,
                message.event,
                attempt,
                self.attempts,
                reason,
                wait,
            )
            time.sleep(wait)

    def _give_up(self, message: Message, reason: str, attempts: int) -> None:
        tries = "attempt" if attempts == 1 else "attempts"
        logger.error(
            "%s: the %s message was not delivered after %d %s: %s",
            self.owner,
            message.event,
            attempts,
            tries,
            reason,
        )
        self.failures.append(f"{message.event}: {reason}")


def raise_failures(owner: str, failures: Iterable[str]) -> None:
    """Raise a :class:`NotificationError` listing ``failures``, if any."""
    failures = list(failures)
    if failures:
        raise NotificationError(
            f"{owner}: {len(failures)} notification(s) not delivered: " + "; ".join(failures)
        )
