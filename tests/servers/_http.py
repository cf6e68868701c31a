"""What the fake Slack and Telegram servers share: a threaded stdlib HTTP server on loopback
whose next answers can be scripted (an error status, a delay past the client's timeout)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class Reply:
    """One scripted answer: ``status`` with ``body`` and ``headers``, after ``delay`` seconds."""

    def __init__(
        self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers or {}
        self.delay = delay


class FakeHTTPServer:
    """Base of the fakes: ``handle(method, path, headers, body) -> Reply`` runs for each request.

    ``script`` holds answers that replace the next requests' (matched by ``scripted_paths``), in
    order. A request whose target is an absolute URL (how a client talks to an HTTP proxy) is
    served as if sent directly, and its ``Proxy-Authorization`` header is kept in
    ``proxy_authorizations``: the fake doubles as an HTTP proxy in front of itself.
    """

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.proxy_authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- overridden ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def scripted(self, path: str) -> bool:
        """Whether a scripted answer may replace the answer to ``path``."""
        return True

    # --- running ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self) -> FakeHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                if path.startswith(("http://", "https://")):
                    with fake.lock:
                        fake.proxy_authorizations.append(self.headers.get("Proxy-Authorization"))
                    parts = urlsplit(path)
                    path = parts.path + (f"?{parts.query}" if parts.query else "")
                headers = {key.lower(): value for key, value in self.headers.items()}
                reply = None
                with fake.lock:
                    fake.requests.append({"method": self.command, "path": path, "body": body})
                    if fake.script and fake.scripted(path):
                        reply = fake.script.pop(0)
                if reply is None:
                    reply = fake.handle(self.command, path, headers, body)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value), {"Content-Type": "application/json"})


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")
