"""A Prefect Block holding a Telegram bot and chat, from which a TelegramObserver is built.

A deployment selects it by name (``PREFECT_SACRED_OBSERVERS=block://sacred-telegram/<name>``),
so the bot token and the proxy password stay in Prefect's secret store. python-telegram-bot is
imported only when an observer is built.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

__all__ = ["TelegramObserverBlock"]


class TelegramObserverBlock(Block):
    """A Telegram bot that announces each experiment run's start and end in a chat.

    Args:
        token: The bot's HTTP API token from @BotFather.
        chat_id: The chat to write to.
        silent_completion: Announce completions without a sound.
        proxy_url: A proxy for the Bot API.
        proxy_username: The proxy's user name.
        proxy_password: The proxy's password.
        started_text: The start message; empty keeps Sacred's.
        completed_text: The completion message; empty keeps Sacred's.
        interrupted_text: The interruption message; empty keeps Sacred's.
        failed_text: The failure message; empty keeps Sacred's.
        priority: The observer's priority.

    Examples:
        Load a stored bot and announce the runs of an experiment in Telegram:
        ```python
        from prefect_sacred.blocks import TelegramObserverBlock

        telegram = TelegramObserverBlock.load("BLOCK_NAME")
        ex.observers.append(telegram.observer())
        ```
    """

    _block_type_name = "Sacred Telegram"
    _logo_url = HttpUrl(
        "https://raw.githubusercontent.com/PrefectHQ/prefect/"
        "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/secret.png"
    )
    _documentation_url = HttpUrl("https://sacred.readthedocs.io/en/stable/observers.html#telegram-observer")

    token: SecretStr = Field(default=..., description="The bot's HTTP API token, from @BotFather.")
    chat_id: str = Field(
        default=..., description="The id (not the name) of the user or group chat, or @channelname."
    )
    silent_completion: bool = Field(
        default=False, description="Announce completions without a sound (starts are always silent)."
    )
    proxy_url: str | None = Field(
        default=None,
        description="A proxy for the Bot API, http://host:port or socks5://host:port, without credentials.",
    )
    proxy_username: str | None = Field(default=None, description="The proxy's user name.")
    proxy_password: SecretStr | None = Field(default=None, description="The proxy's password.")
    started_text: str | None = Field(default=None, description="The start message (empty: Sacred's).")
    completed_text: str | None = Field(default=None, description="The completion message (empty: Sacred's).")
    interrupted_text: str | None = Field(
        default=None, description="The message for a cancelled or interrupted run (empty: Sacred's)."
    )
    failed_text: str | None = Field(
        default=None, description="The failure message, with {error} and {backtrace} (empty: Sacred's)."
    )
    base_url: str | None = Field(
        default=None, description="The Bot API's URL before the token (empty: https://api.telegram.org/bot)."
    )
    priority: int = Field(default=10, description="The observer's priority; Sacred's notifiers have 10.")

    def observer(self) -> Any:
        """A TelegramObserver writing to this chat with these settings."""
        from prefect_sacred.observers.notify.telegram import DEFAULT_TELEGRAM_TEXTS, TelegramObserver

        texts: dict[str, Any] = {
            option: getattr(self, option) or default for option, default in DEFAULT_TELEGRAM_TEXTS.items()
        }
        chat: int | str = int(self.chat_id) if self.chat_id.lstrip("-").isdigit() else self.chat_id
        return TelegramObserver(
            self.token.get_secret_value(),
            chat,
            silent_completion=self.silent_completion,
            priority=self.priority,
            proxy_url=self.proxy_url or None,
            username=self.proxy_username or None,
            password=self.proxy_password.get_secret_value() if self.proxy_password else None,
            base_url=self.base_url or None,
            **texts,
        )
