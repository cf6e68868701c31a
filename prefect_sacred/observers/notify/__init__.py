"""The notification wing: :class:`SlackObserver` and :class:`TelegramObserver`, Sacred's
notifiers, sending from a background thread on every way a run ends.

Importing this package imports neither requests nor python-telegram-bot: they load when an
observer is built. Like Sacred, the notifiers have no command-line flag; a deployment names a
saved Block in ``PREFECT_SACRED_OBSERVERS`` (``block://sacred-slack/NAME``,
``block://sacred-telegram/NAME``), so the webhook URL and the bot token stay secret. Prefect's
own ``SlackWebhook`` Block is accepted as ``slack-webhook://NAME``.

Modules: :mod:`.slack`, :mod:`.telegram`, :mod:`.texts` (Sacred's texts, their keys, durations
in Sacred's words) and :mod:`.sender` (the background sender: timeouts, bounded retries,
Retry-After, secrets scrubbed).

Requires ``pip install 'prefect-sacred[slack]'`` or ``'prefect-sacred[telegram]'``.
"""

from __future__ import annotations

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.observers import registry as _registry

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.base import ObserverLike
    from prefect_sacred.observers.notify.sender import NotificationError
    from prefect_sacred.observers.notify.slack import SlackObserver
    from prefect_sacred.observers.notify.telegram import TelegramObserver
    from prefect_sacred.observers.notify.texts import td_format

__all__ = ["NotificationError", "SlackObserver", "TelegramObserver", "td_format"]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "NotificationError": f"{__name__}.sender",
        "SlackObserver": f"{__name__}.slack",
        "TelegramObserver": f"{__name__}.telegram",
        "td_format": f"{__name__}.texts",
    },
)


@_registry.register_url_scheme("slack-webhook")
def _slack_webhook_url(url: str) -> ObserverLike:
    """``slack-webhook://NAME``: a SlackObserver posting to Prefect's saved ``SlackWebhook`` NAME."""
    name = url[len("slack-webhook://") :].strip("/")
    if not name or "/" in name:
        raise _registry.ObserverConfigError("expected slack-webhook://<name of a saved SlackWebhook block>")
    from prefect_sacred.observers.notify.slack import SlackObserver

    try:
        return SlackObserver.from_block(name)
    except ImportError as exc:
        raise _registry.ObserverConfigError(str(exc)) from None
    except Exception as exc:
        from prefect_sacred.observers.notify.sender import describe

        raise _registry.ObserverConfigError(
            f"cannot load SlackWebhook block {name!r}: {describe(exc)}"
        ) from None
