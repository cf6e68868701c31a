"""A Prefect Block holding a Slack incoming webhook, from which a SlackObserver is built.

A deployment selects it by name (``PREFECT_SACRED_OBSERVERS=block://sacred-slack/<name>``), so
the webhook URL, a secret, stays in Prefect's secret store. requests is imported only when an
observer is built.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

__all__ = ["SlackObserverBlock"]


class SlackObserverBlock(Block):
    """A Slack incoming webhook that announces how each experiment run ended.

    Args:
        webhook_url: The incoming webhook's URL.
        bot_name: The name the messages are posted under.
        icon: The emoji shown with the messages.
        completed_text: The completion message; empty keeps Sacred's.
        interrupted_text: The interruption message; empty keeps Sacred's.
        failed_text: The failure message; empty keeps Sacred's.
        priority: The observer's priority.

    Examples:
        Load a stored webhook and announce the runs of an experiment in Slack:
        ```python
        from prefect_sacred.blocks import SlackObserverBlock

        slack = SlackObserverBlock.load("BLOCK_NAME")
        ex.observers.append(slack.observer())
        ```
    """

    _block_type_name = "Sacred Slack"
    _logo_url = HttpUrl(
        "https://raw.githubusercontent.com/PrefectHQ/prefect/"
        "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/slack.png"
    )
    _documentation_url = HttpUrl("https://sacred.readthedocs.io/en/stable/observers.html#slack-observer")

    webhook_url: SecretStr = Field(
        default=...,
        description="The incoming webhook's URL, e.g. https://hooks.slack.com/services/T000/B000/XXXX.",
    )
    bot_name: str = Field(default="sacred-bot", description="The name the messages are posted under.")
    icon: str = Field(default=":angel:", description="The emoji shown with the messages, e.g. :angel:.")
    completed_text: str | None = Field(
        default=None,
        description="The completion message, e.g. *{experiment[name]}* done: {result} (empty: Sacred's).",
    )
    interrupted_text: str | None = Field(
        default=None, description="The message for a cancelled or interrupted run (empty: Sacred's)."
    )
    failed_text: str | None = Field(
        default=None,
        description="The failure message, {error} is the last line of the trace (empty: Sacred's).",
    )
    priority: int = Field(default=10, description="The observer's priority; Sacred's notifiers have 10.")

    def observer(self) -> Any:
        """A SlackObserver posting to this webhook with these settings."""
        from prefect_sacred.observers.notify.slack import SlackObserver

        return SlackObserver(
            self.webhook_url.get_secret_value(),
            bot_name=self.bot_name,
            icon=self.icon,
            priority=self.priority,
            completed_text=self.completed_text or None,
            interrupted_text=self.interrupted_text or None,
            failed_text=self.failed_text or None,
        )
