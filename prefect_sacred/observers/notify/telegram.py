"""TelegramObserver: Sacred's Telegram messages on python-telegram-bot 21 and 22.

Sacred's own observer uses python-telegram-bot 13 APIs and does not import with 20 or newer.
Bot methods are coroutines since 20: each run's messages are sent from the sender's thread on an
event loop of its own, so a flow's event loop is never blocked or nested. Requires
``pip install 'prefect-sacred[telegram]'``, imported when an observer is built.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import quote, urlsplit

from prefect_sacred.observers.notify._observer import (
    NotificationObserver,
    check_options,
    load_config,
    require,
)
from prefect_sacred.observers.notify.sender import (
    BackgroundSender,
    Message,
    PermanentFailure,
    RetryLater,
    describe,
    logger,
    protect,
)

__all__ = ["DEFAULT_TELEGRAM_TEXTS", "TELEGRAM_API", "TelegramObserver", "proxy_with_credentials"]

#: Sacred's texts, word for word.
DEFAULT_TELEGRAM_TEXTS = {
    "started_text": "♻ *{experiment[name]}* started at _{start_time}_ on host `{host_info[hostname]}`",
    "completed_text": "✅ *{experiment[name]}* completed after _{elapsed_time}_ with result=`{result}`",
    "interrupted_text": "⚠ *{experiment[name]}* interrupted after _{elapsed_time}_",
    "failed_text": (
        "❌ *{experiment[name]}* failed after _{elapsed_time}_ with `{error}`\n\n"
        "Backtrace:\n```{backtrace}```"
    ),
}
TELEGRAM_API = "https://api.telegram.org/bot"
MAX_MESSAGE = 4096  # characters Telegram accepts in one message
_OPTIONS = {
    "token",
    "chat_id",
    "silent_completion",
    "priority",
    "proxy_url",
    "username",
    "password",
    *DEFAULT_TELEGRAM_TEXTS,
}


class TelegramObserver(NotificationObserver):
    """Sends a message to a Telegram chat when a run starts (silently), completes, is
    interrupted or fails (with the backtrace).

    Args:
        bot_or_token: The bot's token (a secret: prefer a ``sacred-telegram`` Block), or a
            ``telegram.Bot`` whose token and ``base_url`` are used.
        chat_id: The chat's id (a user, a group, or ``@channelname``).
        silent_completion: Send the completion without a sound.
        priority: The observer's priority.
        started_text: A ``str.format`` template over Sacred's run dict; None sends nothing for
            this event. Checked now: an unknown key or a stray brace raises ValueError.
        completed_text: Likewise, for completions.
        interrupted_text: Likewise, for interruptions.
        failed_text: Likewise, for failures (``{error}``, ``{backtrace}``).
        proxy_url: ``http://host:port`` or ``socks5://host:port`` (socks needs
            ``python-telegram-bot[socks]``). Without it ``HTTPS_PROXY`` is honoured.
        username: The proxy's user name.
        password: The proxy's password.
        base_url: The Bot API's URL, the token appended (a local Bot API server, tests).
        timeout: Connect and read timeouts of one request, in seconds.
        join_timeout: Seconds the end of a run waits for its message.
        attempts: Tries per message; ``retry_after`` is waited out between them.
    """

    def __init__(
        self,
        bot_or_token: Any,
        chat_id: int | str,
        silent_completion: bool = False,
        priority: int = 10,
        started_text: str | None = DEFAULT_TELEGRAM_TEXTS["started_text"],
        completed_text: str | None = DEFAULT_TELEGRAM_TEXTS["completed_text"],
        interrupted_text: str | None = DEFAULT_TELEGRAM_TEXTS["interrupted_text"],
        failed_text: str | None = DEFAULT_TELEGRAM_TEXTS["failed_text"],
        proxy_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        base_url: str | None = None,
        timeout: tuple[float, float] = (5.0, 10.0),
        join_timeout: float = 15.0,
        attempts: int = 4,
    ) -> None:
        telegram = require("telegram", "TelegramObserver", "python-telegram-bot", "telegram")
        super().__init__(priority=priority, join_timeout=join_timeout, attempts=attempts)
        if isinstance(bot_or_token, telegram.Bot):
            token = bot_or_token.token
            bot_url = str(getattr(bot_or_token, "base_url", "") or "")
            if base_url is None and bot_url.endswith(token) and not bot_url.startswith(TELEGRAM_API):
                base_url = bot_url[: -len(token)]
        elif isinstance(bot_or_token, str) and bot_or_token:
            token = bot_or_token
        else:
            raise ValueError("TelegramObserver needs a bot token (or a telegram.Bot)")
        if chat_id in (None, ""):
            raise ValueError("TelegramObserver needs a chat_id")
        self.token = token
        self.chat_id = chat_id
        self.silent_completion = bool(silent_completion)
        self.base_url = base_url
        self.timeout = timeout
        self.proxy = proxy_with_credentials(proxy_url, username, password) if proxy_url else None
        self._proxy_password = password
        texts = {
            "started_text": started_text,
            "completed_text": completed_text,
            "interrupted_text": interrupted_text,
            "failed_text": failed_text,
        }
        self._set_texts(texts)
        protect(*self._secrets())

    @classmethod
    def from_config(cls, filename: Any) -> TelegramObserver:
        """An observer from a ``.json``, ``.yaml`` or ``.pickle`` file with ``token`` and
        ``chat_id``, and optionally ``silent_completion``, ``proxy_url``, ``username``,
        ``password`` and the four texts (``null`` sends nothing for that event)."""
        config = load_config("TelegramObserver", filename)
        if "token" not in config or "chat_id" not in config:
            raise ValueError(
                f"TelegramObserver: configuration file {str(filename)!r} must contain entries "
                "for 'token' and 'chat_id'"
            )
        check_options("TelegramObserver", str(filename), config, _OPTIONS, {"token", "chat_id"})
        token = config.pop("token")
        return cls(token, **config)

    def __repr__(self) -> str:
        return f"TelegramObserver(chat_id={self.chat_id!r}, token='***')"

    def _secrets(self) -> list[str]:
        return [self.token, self._proxy_password or "", self.proxy or ""]

    def _flow_run_line(self, name: str, url: str | None) -> str:
        return f"\nPrefect flow run [{name}]({url})" if url else f"\nPrefect flow run {name}"

    def _message(self, event: str, text: str) -> Message:
        message = super()._message(event, text)
        run = self._current()
        if len(message.text) > MAX_MESSAGE and event == "failed":
            # Keep the end of the backtrace, where the error is.
            backtrace = str(run.get("backtrace", ""))
            keep = max(0, len(backtrace) - (len(message.text) - MAX_MESSAGE) - 20)
            run["backtrace"] = "...\n" + backtrace[len(backtrace) - keep :]
            message = super()._message(event, text)
        if len(message.text) > MAX_MESSAGE:
            message.text = message.text[: MAX_MESSAGE - 3] + "..."
        silent = event == "started" or (event == "completed" and self.silent_completion)
        message.options["disable_notification"] = silent
        return message

    def _new_sender(self) -> BackgroundSender:
        session = _Session(self)
        return BackgroundSender(type(self).__name__, session.deliver, session.close, attempts=self.attempts)


class _Session:
    """One run's event loop and Bot, living in the sender's thread."""

    def __init__(self, observer: TelegramObserver) -> None:
        self.observer = observer
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bot: Any = None

    def _bot(self) -> Any:
        from telegram import Bot
        from telegram.request import HTTPXRequest

        obs = self.observer
        connect, read = obs.timeout
        request = HTTPXRequest(
            connect_timeout=connect, read_timeout=read, write_timeout=read, proxy=obs.proxy
        )
        return Bot(obs.token, base_url=obs.base_url or TELEGRAM_API, request=request)

    def deliver(self, message: Message) -> None:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._deliver(message))

    async def _deliver(self, message: Message) -> None:
        from telegram.constants import ParseMode
        from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter

        obs = self.observer
        try:
            if self.bot is None:
                self.bot = self._bot()
                await self.bot.initialize()
            try:
                await self.bot.send_message(
                    chat_id=obs.chat_id, text=message.text, parse_mode=ParseMode.MARKDOWN, **message.options
                )
            except BadRequest as exc:
                if "parse" not in str(exc).lower():
                    raise
                # An ``_`` or ``*`` in a name or an error: Telegram refuses the Markdown, so the
                # same words go out as plain text rather than not at all.
                logger.info("TelegramObserver: Markdown refused (%s); sending plain text", describe(exc))
                await self.bot.send_message(chat_id=obs.chat_id, text=message.text, **message.options)
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
            raise RetryLater(seconds, describe(exc)) from None
        except InvalidToken as exc:
            self.bot = None
            raise PermanentFailure(describe(exc)) from None
        except (BadRequest, Forbidden) as exc:
            raise PermanentFailure(describe(exc)) from None

    def close(self) -> None:
        if self.loop is None:
            return
        try:
            if self.bot is not None:
                self.loop.run_until_complete(self.bot.shutdown())
        finally:
            self.loop.close()
            self.loop, self.bot = None, None


def proxy_with_credentials(proxy_url: str, username: str | None = None, password: str | None = None) -> str:
    """``proxy_url`` with ``username`` and ``password`` in it (http, https, socks5, socks5h)."""
    parts = urlsplit(proxy_url)
    if parts.scheme.lower() not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise ValueError(
            "TelegramObserver proxy_url should be in format PROTOCOL://PROXY_HOST[:PROXY_PORT]; "
            "HTTP and SOCKS5 are supported"
        )
    if not username:
        return proxy_url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    credentials = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return parts._replace(netloc=f"{credentials}@{host}").geturl()
