"""Sacred's notification texts, the keys they may use, and how a run's end is put into words.

Texts are ``str.format`` templates over Sacred's run dict (``{experiment[name]}``,
``{elapsed_time}``, ``{result}``, ``{error}``, ``{config[lr]}``...), plus ``{flow_run[name]}``
and ``{flow_run[url]}`` for the Prefect flow run. :func:`check_text` refuses a template with an
unknown key or a stray brace when the observer is built, so a typo never costs the message at
the end of a long run.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BASE_KEYS",
    "EVENT_KEYS",
    "check_text",
    "render",
    "td_format",
]

#: The keys every text may use: Sacred's run dict at the start, and the Prefect flow run.
BASE_KEYS = frozenset({"_id", "config", "start_time", "experiment", "command", "host_info", "flow_run"})

#: The keys each event adds (Sacred's names). ``backtrace`` is Telegram's own.
EVENT_KEYS: dict[str, frozenset[str]] = {
    "started": frozenset(),
    "completed": frozenset({"result", "stop_time", "elapsed_time"}),
    "interrupted": frozenset({"status", "interrupt_time", "elapsed_time"}),
    "failed": frozenset({"fail_trace", "error", "fail_time", "elapsed_time", "backtrace"}),
}

_PERIODS = (
    ("year", 60 * 60 * 24 * 365),
    ("month", 60 * 60 * 24 * 30),
    ("day", 60 * 60 * 24),
    ("hour", 60 * 60),
    ("minute", 60),
    ("second", 1),
)


def td_format(delta: dt.timedelta) -> str:
    """A duration in Sacred's words: ``1 hour, 2 minutes, 5 seconds``, ``less than a second``."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "less than a second"
    parts = []
    for name, length in _PERIODS:
        if seconds >= length:
            value, seconds = divmod(seconds, length)
            parts.append(f"{value} {name}" if value == 1 else f"{value} {name}s")
    return ", ".join(parts)


_OPENED_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)")


def check_text(owner: str, option: str, text: str | None, event: str) -> str | None:
    """``text`` if it formats with the keys of ``event``; else ValueError naming what is wrong.

    Args:
        owner: The observer's class name, for the message.
        option: The option holding the text (``completed_text``), for the message.
        text: The template; None means "no message for this event" or "Sacred's default".
        event: ``started``, ``completed``, ``interrupted`` or ``failed``.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{owner} {option} must be a string or null, not {type(text).__name__}")
    known = BASE_KEYS | EVENT_KEYS[event]
    problems: list[str] = []
    names: list[str] = []
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as exc:
        # A brace left open hides the fields after it from the parser: find the keys by eye.
        names = _OPENED_FIELD.findall(text)
        problems.append(f"bad braces ({exc}; write {{{{ and }}}} for literal braces)")
    for name in names:
        key = re.split(r"[.\[!:]", name, maxsplit=1)[0]
        if key == "" or key.isdigit():
            problems.insert(0, f"positional field {{{name}}} (use a key such as {{experiment[name]}})")
        elif key not in known:
            problems.insert(0, f"unknown key {key!r}")
    if problems:
        raise ValueError(
            f"{owner} {option} {text!r}: {'; '.join(dict.fromkeys(problems))}. "
            f"Keys for this text: {', '.join(sorted(known))}"
        )
    return text


class _Lenient(string.Formatter):
    """Formats what it can and shows ``?`` for what the run does not have."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError):
            return "?", field_name

    def format_field(self, value: Any, format_spec: str) -> Any:
        try:
            return super().format_field(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


def render(text: str, run: Mapping[str, Any]) -> str:
    """``text.format(**run)``, or, when a value is missing (``{config[lr]}`` of a run resumed
    in another process), the same text with ``?`` in its place: the message is never lost."""
    try:
        return text.format(**run)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError):
        return _Lenient().vformat(text, (), dict(run))
