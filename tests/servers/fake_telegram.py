"""A Telegram Bot API on loopback that records ``sendMessage`` (reference/test-backends.md 6).

python-telegram-bot talks to it through ``base_url``; it serves ``/bot<TOKEN>/<method>``:
``getMe``, ``sendMessage`` (400 ``can't parse entities`` for Markdown Telegram would refuse),
401 for another token. ``fake.script`` takes the next answers instead (429 with ``retry_after``:
:func:`flood`). Sent to as an HTTP proxy it serves the request itself and records the
``Proxy-Authorization`` header.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from tests.servers._http import FakeHTTPServer, Reply, json_reply

__all__ = ["FakeTelegram", "Reply", "flood", "markdown_error"]

TOKEN = "123456:TEST-s3cr3t-b0t-t0k3n"


def flood(seconds: int = 1) -> Reply:
    """Telegram's flood control: 429 with ``parameters.retry_after``."""
    return json_reply(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {seconds}",
            "parameters": {"retry_after": seconds},
        },
    )


def markdown_error(text: str) -> int | None:
    """Where legacy Markdown (``parse_mode=Markdown``) cannot be parsed, or None.

    Telegram's rules, simplified: ``*bold*``, ``_italic_``, `` `code` `` and ```` ```pre``` ````
    must be closed and must not nest; a backslash escapes the next character outside code.
    """
    index, opened = 0, None
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if text.startswith("```", index):
            end = text.find("```", index + 3)
            if end < 0:
                return index
            index = end + 3
            continue
        if char == "`":
            end = text.find("`", index + 1)
            if end < 0:
                return index
            index = end + 1
            continue
        if char in "*_":
            if opened is None:
                opened = (char, index)
            elif opened[0] == char:
                opened = None
            else:
                return index
        index += 1
    return opened[1] if opened else None


class FakeTelegram(FakeHTTPServer):
    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        #: The sendMessage calls answered with 200: chat_id, text, parse_mode, disable_notification.
        self.messages: list[dict[str, Any]] = []
        self._next_id = 1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def scripted(self, path: str) -> bool:
        return path.endswith("/sendMessage")

    def texts(self) -> list[str]:
        with self.lock:
            return [message["text"] for message in self.messages]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return json_reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        api_method = path[len(prefix) :]
        if api_method == "getMe":
            bot = {"id": 123456, "is_bot": True, "first_name": "Test Bot", "username": "test_bot"}
            return json_reply(200, {"ok": True, "result": bot})
        if api_method != "sendMessage":
            return json_reply(200, {"ok": True, "result": True})
        fields = _fields(headers.get("content-type", ""), body)
        text = str(fields.get("text", ""))
        if not text:
            return _bad_request("message text is empty")
        if len(text) > 4096:
            return _bad_request("message is too long")
        if str(fields.get("parse_mode", "")).lower() == "markdown":
            offset = markdown_error(text)
            if offset is not None:
                return _bad_request(
                    f"can't parse entities: Can't find end of the entity starting at byte offset {offset}"
                )
        message = {
            "chat_id": fields.get("chat_id"),
            "text": text,
            "parse_mode": fields.get("parse_mode"),
            "disable_notification": str(fields.get("disable_notification", "false")).lower() == "true",
        }
        with self.lock:
            self.messages.append(message)
            message_id, self._next_id = self._next_id, self._next_id + 1
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {
                "id": int(str(fields.get("chat_id", "0")).lstrip("@") or 0)
                if str(fields.get("chat_id", "")).lstrip("-").isdigit()
                else 1,
                "type": "private",
            },
            "text": text,
        }
        return json_reply(200, {"ok": True, "result": result})


def _bad_request(description: str) -> Reply:
    return json_reply(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"})


def _fields(content_type: str, body: bytes) -> dict[str, Any]:
    if "json" in content_type:
        value = json.loads(body or b"{}")
        return value if isinstance(value, dict) else {}
    return dict(parse_qsl(body.decode()))
