"""A loopback TCP proxy the tests control, to give a backend real network faults.

Put it in front of PostgreSQL, MariaDB or the Mongo wire server and switch its mode:

* ``pass``: relays both ways (the normal state);
* ``drop``: closes every connection and refuses new ones (a server that went away);
* ``hold``: keeps accepting TCP but never answers and never forwards, on new connections and on
  the ones already open (a server that hangs: the fault without a timeout turns into a hang);
* :meth:`TcpFaultProxy.restore`: back to ``pass``. Connections held until then are closed, as a
  hung server's are when it is restarted; a client must not keep using them.

One thread accepts, two threads relay each connection (tests open a handful). Everything closes
in :meth:`TcpFaultProxy.stop`.

The fixtures ``pg_proxy``, ``mariadb_proxy`` and ``mongo_proxy`` (imported by tests/conftest.py)
give a :class:`ProxiedBackend`: a proxy in front of a database of its own, a URL through the
proxy and one that bypasses it, for reading back what was stored.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import port_open, service_missing

MODES = ("pass", "drop", "hold")


class _Pair:
    """A client connection and, unless it was accepted while holding, its upstream one."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.held = upstream is None

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpFaultProxy:
    """Relays ``127.0.0.1:port`` to ``target``; :meth:`set_mode` injects faults.

    Args:
        target_host: The backend's host.
        target_port: The backend's port.
        port: The port to listen on (0: a free one, kept across ``drop`` and ``restore``).
    """

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode = "pass"
        self.accepted = 0  #: connections accepted so far, whatever the mode
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # --- control ----------------------------------------------------------------------------

    def start(self) -> int:
        """Listen (on a free port the first time); returns the port."""
        self._listen()
        return self.port

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._close_listener()
        self._close_pairs(lambda pair: True)
        for thread in self._threads:
            thread.join(5)
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def set_mode(self, mode: str) -> None:
        """Switch to ``pass``, ``drop`` or ``hold`` (see the module docstring)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        with self._lock:
            previous, self.mode = self.mode, mode
            if mode == "hold":
                for pair in self._pairs:
                    pair.held = True
        if mode == "drop":
            self._close_listener()
            self._close_pairs(lambda pair: True)
        elif mode == "pass":
            self._close_pairs(lambda pair: pair.held)
            if previous == "drop" or self._listener is None:
                self._listen()

    def drop(self) -> None:
        self.set_mode("drop")

    def hold(self) -> None:
        self.set_mode("hold")

    def restore(self) -> None:
        self.set_mode("pass")

    def __enter__(self) -> TcpFaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # --- machinery --------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()

    def _close_pairs(self, which: Any) -> None:
        with self._lock:
            closing = [pair for pair in self._pairs if which(pair)]
            self._pairs = [pair for pair in self._pairs if not which(pair)]
        for pair in closing:
            pair.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tcp-fault-proxy")
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed (drop, stop)
                return
            self.accepted += 1
            upstream = None
            if self.mode == "pass":
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:  # the backend itself is down: so is the proxy's connection
                    client.close()
                    continue
            pair = _Pair(client, upstream)
            with self._lock:
                if self._listener is not listener:  # dropped meanwhile
                    pair.close()
                    return
                self._pairs.append(pair)
            self._spawn(self._relay, pair, client, upstream)
            if upstream is not None:
                self._spawn(self._relay, pair, upstream, client)

    def _relay(self, pair: _Pair, source: socket.socket, sink: socket.socket | None) -> None:
        """Forward ``source`` to ``sink`` while passing; swallow what comes while held."""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if pair.held or sink is None:
                continue  # a hung server reads nothing back and answers nothing
            try:
                sink.sendall(data)
            except OSError:
                break
        if not pair.held:  # one side closed: close the other, as a real connection would
            self._close_pairs(lambda other: other is pair)


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class ProxiedBackend:
    """A backend behind a :class:`TcpFaultProxy`.

    ``url`` goes through the proxy; ``direct_url`` reaches the same database without it (to
    read back what was stored while the proxy holds or drops).
    """

    proxy: TcpFaultProxy
    url: str
    direct_url: str
    extra: dict[str, Any] = field(default_factory=dict)


def _sql_database(admin_url: str, port: int) -> Iterator[str]:
    """A database of its own on the server of ``admin_url``: yields its URL (not proxied)."""
    import sqlalchemy as sa

    from tests.backends.sql import drop_database

    if not port_open("127.0.0.1", port):
        service_missing(f"no database server on 127.0.0.1:{port}")
    name = f"ps_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin_url, name)


def _proxied_sql(admin_url: str, port: int) -> Iterator[ProxiedBackend]:
    import sqlalchemy as sa

    for direct in _sql_database(admin_url, port):
        with TcpFaultProxy("127.0.0.1", port) as proxy:
            through = sa.make_url(direct).set(port=proxy.port).render_as_string(hide_password=False)
            yield ProxiedBackend(proxy, through, direct)


@pytest.fixture
def pg_proxy() -> Iterator[ProxiedBackend]:
    """PostgreSQL (127.0.0.1:5432) behind a fault proxy, in a database of the test's own."""
    from tests.backends.sql import PG_ADMIN

    yield from _proxied_sql(PG_ADMIN, 5432)


@pytest.fixture
def mariadb_proxy() -> Iterator[ProxiedBackend]:
    """MariaDB (127.0.0.1:3306) behind a fault proxy, in a database of the test's own."""
    from tests.backends.sql import MARIADB_ADMIN

    yield from _proxied_sql(MARIADB_ADMIN, 3306)


@pytest.fixture
def mongo_proxy() -> Iterator[ProxiedBackend]:
    """A Mongo wire server of the test's own behind a fault proxy (``extra["server"]``)."""
    try:
        from tests.servers.mongo_wire import MongoWireServer
    except ImportError as exc:
        service_missing(f"the Mongo wire server needs mongomock and mockupdb ({exc})")
    with MongoWireServer() as server, TcpFaultProxy("127.0.0.1", server.port) as proxy:
        through = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        yield ProxiedBackend(proxy, through, server.uri, {"server": server})
