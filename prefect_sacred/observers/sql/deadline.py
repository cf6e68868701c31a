"""Read timeouts for database drivers that have none: a watchdog that cuts a stuck socket.

libpq (psycopg, psycopg2) waits for a reply as long as it takes: a PostgreSQL that accepts TCP
and never answers (a hung or stopped server, a half-dead proxy) blocks the caller forever, and
keepalives do not help while the peer's kernel still acknowledges. A server-side
``statement_timeout`` never reaches a server that does not read. So the watchdog shuts down the
socket of an operation that overruns its deadline: the driver's blocked read then fails at once
with a connection error, SQLAlchemy discards the connection, and the caller gets an error it can
retry instead of a hang.

One daemon thread serves the whole process; arming costs a dict entry and a notify.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Watchdog", "socket_of", "watchdog"]


def socket_of(dbapi_connection: Any) -> int | None:
    """The file descriptor of a DBAPI connection's socket, when its driver tells.

    psycopg and psycopg2 have ``fileno()``; PyMySQL keeps its socket in ``_sock``.
    """
    fileno = getattr(dbapi_connection, "fileno", None)
    if not callable(fileno):
        fileno = getattr(getattr(dbapi_connection, "_sock", None), "fileno", None)
    if not callable(fileno):
        return None
    try:
        fd = fileno()
    except Exception:  # a closed connection
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class Watchdog:
    """Shuts down the socket of an armed operation once its deadline passes."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._armed: dict[int, tuple[float, int, float]] = {}  # key -> (deadline, fd, seconds)
        self._fired: dict[int, float] = {}  # key -> the seconds it was given
        self._thread: threading.Thread | None = None

    def arm(self, owner: Any, seconds: float) -> None:
        """Cut ``owner``'s socket unless :meth:`disarm` comes within ``seconds``."""
        fd = socket_of(owner)
        if fd is None:
            return
        with self._condition:
            self._fired.pop(id(owner), None)
            self._armed[id(owner)] = (time.monotonic() + seconds, fd, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def disarm(self, owner: Any) -> None:
        with self._condition:
            self._armed.pop(id(owner), None)

    def fired(self, owner: Any, clear: bool = False) -> float | None:
        """The timeout ``owner`` overran since it was last armed, or None."""
        with self._condition:
            if clear:
                return self._fired.pop(id(owner), None)
            return self._fired.get(id(owner))

    @contextlib.contextmanager
    def guard(self, owner: Any, seconds: float) -> Iterator[None]:
        """``with``: the block's network calls on ``owner`` get ``seconds`` to finish."""
        self.arm(owner, seconds)
        try:
            yield
        finally:
            self.disarm(owner)

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for key, (deadline, fd, seconds) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        self._fired[key] = seconds
                        _shut_down(fd)
                wait = min((deadline for deadline, _, _ in self._armed.values()), default=None)
                self._condition.wait(None if wait is None else max(wait - now, 0.01))


def _shut_down(fd: int) -> None:
    """Shut the connection down for both directions; the driver keeps (and later closes) its fd."""
    try:
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:  # closed meanwhile: nothing is waiting on it any more
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


#: The process's watchdog (a service, not run state: every engine's operations share its thread).
watchdog = Watchdog()
