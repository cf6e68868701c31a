"""moto's S3 server, with conditional writes atomic as they are on S3.

moto checks ``If-None-Match: *`` and then writes, with no lock between the two: two concurrent
creates of one key can both succeed (seen here: two of 20 processes given run id 16). S3 itself
decides them one at a time; so does this server, by serialising conditional requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

__all__ = ["AtomicMotoServer"]

_CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")


class AtomicMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` whose conditional requests are decided one at a time."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def atomic(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if not any(name in environ for name in _CONDITIONS):
                return app(environ, start_response)  # type: ignore[no-any-return]
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(
            self._ip_address, self._port, atomic, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
