"""SlackObserver: Sacred's Slack message at the end of every run, from a background thread.

It posts Sacred's payload (``username``, ``icon_emoji``, ``text``) to an incoming webhook with
Sacred's texts, plus a line naming the Prefect flow run. Requires ``requests``
(``pip install 'prefect-sacred[slack]'``), imported when an observer is built.
"""

from __future__ import annotations

import json
from typing import Any

from prefect_sacred.observers.notify._observer import (
    NotificationObserver,
    check_options,
    load_config,
    require,
)
from prefect_sacred.observers.notify.sender import Message, PermanentFailure, RetryLater, protect

__all__ = ["DEFAULT_SLACK_TEXTS", "SlackObserver"]

#: Sacred's texts, word for word.
DEFAULT_SLACK_TEXTS = {
    "completed_text": (
        ":white_check_mark: *{experiment[name]}* completed after _{elapsed_time}_ with result=`{result}`"
    ),
    "interrupted_text": ":warning: *{experiment[name]}* interrupted after _{elapsed_time}_",
    "failed_text": ":x: *{experiment[name]}* failed after _{elapsed_time}_ with `{error}`",
}
_OPTIONS = {
    "webhook_url",
    "bot_name",
    "icon",
    "priority",
    "completed_text",
    "interrupted_text",
    "failed_text",
}


class SlackObserver(NotificationObserver):
    """Sends a message to Slack when a run completes, is interrupted or fails.

    Args:
        webhook_url: The incoming webhook's URL (a secret: prefer a ``sacred-slack`` Block).
        bot_name: The name the message is posted under.
        icon: The emoji shown with it.
        priority: The observer's priority.
        completed_text: A ``str.format`` template; None keeps Sacred's text. Checked now: an
            unknown key or a stray brace raises ValueError naming it.
        interrupted_text: Likewise, for interruptions (cancelled, Ctrl-C, timed out).
        failed_text: Likewise, for failures (``{error}`` is the trace's last line).
        timeout: Connect and read timeouts of one POST, in seconds.
        join_timeout: Seconds the end of a run waits for its message.
        attempts: Tries per message; a 429's ``Retry-After`` is waited out between them.
    """

    def __init__(
        self,
        webhook_url: str,
        bot_name: str = "sacred-bot",
        icon: str = ":angel:",
        priority: int = 10,
        completed_text: str | None = None,
        interrupted_text: str | None = None,
        failed_text: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 10.0),
        join_timeout: float = 15.0,
        attempts: int = 4,
    ) -> None:
        require("requests", "SlackObserver", "requests", "slack")
        if not isinstance(webhook_url, str) or not webhook_url.startswith(("https://", "http://")):
            raise ValueError("SlackObserver webhook_url must be an http(s) URL")
        super().__init__(priority=priority, join_timeout=join_timeout, attempts=attempts)
        self.webhook_url = webhook_url
        self.bot_name = bot_name
        self.icon = icon
        self.timeout = timeout
        texts = {
            "completed_text": completed_text,
            "interrupted_text": interrupted_text,
            "failed_text": failed_text,
        }
        self._set_texts(texts, DEFAULT_SLACK_TEXTS)
        protect(*self._secrets())

    @classmethod
    def from_config(cls, filename: Any) -> SlackObserver:
        """An observer from a ``.json``, ``.yaml`` or ``.pickle`` file with ``webhook_url`` and
        optionally ``bot_name``, ``icon``, ``priority`` and the three texts."""
        config = load_config("SlackObserver", filename)
        check_options("SlackObserver", str(filename), config, _OPTIONS, {"webhook_url"})
        return cls(**config)

    @classmethod
    def from_block(cls, block: Any, **kwargs: Any) -> SlackObserver:
        """An observer posting to the webhook of Prefect's ``SlackWebhook`` Block.

        Args:
            block: A ``SlackWebhook`` or the name of a saved one.
            **kwargs: The other arguments of :class:`SlackObserver`.
        """
        if isinstance(block, str):
            from prefect.blocks.notifications import SlackWebhook

            block = SlackWebhook.load(block.removeprefix("slack-webhook/"))
        url = block.url.get_secret_value() if hasattr(block.url, "get_secret_value") else str(block.url)
        return cls(url, **kwargs)

    def _secrets(self) -> list[str]:
        return _webhook_secrets(self.webhook_url)

    def __repr__(self) -> str:
        return f"SlackObserver(bot_name={self.bot_name!r}, webhook_url='***')"

    def _flow_run_line(self, name: str, url: str | None) -> str:
        return f"\nPrefect flow run <{url}|{name}>" if url else f"\nPrefect flow run {name}"

    def _deliver(self, message: Message) -> None:
        import requests

        payload = {"username": self.bot_name, "icon_emoji": self.icon, "text": message.text}
        headers = {"Content-type": "application/json", "Accept": "text/plain"}
        response = requests.post(
            self.webhook_url, data=json.dumps(payload), headers=headers, timeout=self.timeout
        )
        if response.status_code == 200:
            return
        reason = f"HTTP {response.status_code} {response.text.strip()[:200]}".strip()
        if response.status_code == 429:
            raise RetryLater(_seconds(response.headers.get("Retry-After")), reason)
        if response.status_code >= 500 or response.status_code == 408:
            raise RuntimeError(reason)
        raise PermanentFailure(reason)


def _seconds(value: str | None) -> float:
    try:
        return float(value) if value is not None else 1.0
    except ValueError:
        return 1.0


def _webhook_secrets(url: str) -> list[str]:
    """The URL, its path and each long path segment: any of them reveals the webhook."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path
    return [url, path, *(part for part in path.split("/") if len(part) >= 8 and part != "services")]
