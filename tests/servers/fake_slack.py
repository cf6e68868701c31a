"""A Slack incoming webhook on loopback that records each POST (reference/test-backends.md 5).

Answers as Slack does: 200 ``ok``; 400 ``invalid_payload`` (not JSON) or ``no_text``; 404
``no_service`` (another hook's path). ``fake.script`` takes the next answers instead::

    with FakeSlack() as slack:
        slack.script += [Reply(429, "rate_limited", {"Retry-After": "1"}), Reply(500, "rollup_error")]
        SlackObserver(slack.url)...
        slack.received  # the payloads Slack accepted, in order
"""

from __future__ import annotations

import json
from typing import Any

from tests.servers._http import FakeHTTPServer, Reply

__all__ = ["FakeSlack", "Reply"]

HOOK_PATH = "/services/T0000TEST/B0000TEST/s3cr3tW3bh00kT0k3n"


class FakeSlack(FakeHTTPServer):
    def __init__(self) -> None:
        super().__init__()
        #: The payloads answered with 200, in order.
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def scripted(self, path: str) -> bool:
        return path == HOOK_PATH

    def texts(self) -> list[str]:
        with self.lock:
            return [payload["text"] for payload in self.received]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST" or path != HOOK_PATH:
            return Reply(404, "no_service")
        try:
            payload = json.loads(body)
        except ValueError:
            return Reply(400, "invalid_payload")
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return Reply(400, "no_text")
        with self.lock:
            self.received.append(payload)
        return Reply(200, "ok", {"Content-Type": "text/html"})
