"""Small helpers every layer may use: file digests, credential redaction, Sacred's output filter
and Sacred's errors.

Sacred users import ``apply_backspaces_and_linefeeds``, ``SacredError``, ``ConfigAddedError``...
from ``sacred.utils``; here they are in ``prefect_sacred.utils``.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

__all__ = [
    "ConfigAddedError",
    "ConfigError",
    "NamedConfigNotFoundError",
    "SacredError",
    "UsageError",
    "apply_backspaces_and_linefeeds",
    "md5_of_file",
    "redact",
    "without_leading_points",
]


class SacredError(Exception):
    """Sacred's base error, for code that catches it (a read-only config changed, ...)."""


class UsageError(SacredError, ValueError):
    """The command line, the options or the config updates of a run are malformed; nothing ran."""


class ConfigError(UsageError):
    """The config cannot be assembled: an unknown entry or named config, a failing scope."""


class ConfigAddedError(ConfigError):
    """A config update sets an entry no config defines and no captured function reads (Sacred's)."""


class NamedConfigNotFoundError(ConfigError):
    """No named config (nor config file) of that name (Sacred's)."""


def md5_of_file(path: str | os.PathLike[str]) -> str:
    """The hex md5 of a file's content, read in 1 MB blocks (how Sacred names stored files)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def without_leading_points(
    metrics_by_name: dict[str, dict[str, list[Any]]], counts: dict[str, int]
) -> dict[str, dict[str, list[Any]]]:
    """``metrics_by_name`` without the first ``counts[name]`` points of each metric.

    For a batch sent again whose first points are known to be stored already (a write whose
    answer was lost): what is left is what the backend still lacks, in order.
    """
    trimmed: dict[str, dict[str, list[Any]]] = {}
    for name, metric in metrics_by_name.items():
        skip = max(counts.get(name, 0), 0)
        if skip == 0:
            trimmed[name] = metric
        elif skip < len(metric["values"]):
            kept = dict(metric)
            for key in ("steps", "values", "timestamps"):
                kept[key] = list(metric[key][skip:])
            trimmed[name] = kept
    return trimmed


# A URL's userinfo runs to the last "@" of the URL: SQLAlchemy takes a raw "/", "#", "?" or ":"
# in a password, so the first "/" or "?" does not end it. Whitespace does (a URL in a message).
# Stopping at the last "@" may hide more than the userinfo (an "@" in the query), never less;
# when that "@" was inside a query-string secret ("?password=a@b"), the value's rest ("after",
# up to the next "&") is hidden too.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>\S*)@(?P<after>[^&\s]*)")
# The same without a scheme ("user:password@host", a URL missing its "postgresql://" or
# mistyped "mongodb:/user:pw@h", "postgresql//user:pw@h"): a word that starts a token or follows
# a "/", a colon, and anything up to the token's last "@".
_BARE_USERINFO = re.compile(
    r"(?<![^\s'\"(=,\[/])(?P<user>[A-Za-z][A-Za-z0-9._-]*):(?P<secret>[^\s/][^\s]*)@(?P<after>[^&\s]*)"
)
# key=value (query strings, libpq conninfo) and 'key': 'value' (reprs, JSON) with a secret key.
_SECRET_KEY = (
    r"(?:[A-Za-z0-9_.-]*?(?:password|passwd|secret|token|credentials?)"
    r"|(?:[A-Za-z0-9_.-]*[_.-]|api|access)?(?:key|pwd))"
)
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_SECRET_ASSIGNMENT = re.compile(rf"(?i)(?P<key>\b{_SECRET_KEY}=)(?P<value>{_QUOTED}|[^&\s]*)")
_SECRET_ITEM = re.compile(rf"(?i)(?P<key>['\"]{_SECRET_KEY}['\"]\s*:\s*)(?P<value>{_QUOTED})")
# A user name shown as it is; anything else before the "@" (an access token, say) is hidden.
_PLAIN_USER = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")
_TOKEN_PREFIX = re.compile(r"(?i)^(?:gh[pousr]_|github_pat_|glpat-|xox[abposr]-|sk-|ya29\.)")
_ENDS_IN_SECRET_VALUE = re.compile(rf"(?i)\b{_SECRET_KEY}=[^&\s]*$")


def _after_userinfo(hidden: str, after: str) -> str:
    """What follows the hidden part's "@": hidden as well when the "@" cut a secret value."""
    return "***" if _ENDS_IN_SECRET_VALUE.search(hidden) else after


def redact(text: str) -> str:
    """Hide credentials inside ``text``: in URLs and in ``key=value`` / ``'key': 'value'`` pairs.

    ``mongodb://u:pw@h`` -> ``mongodb://u:***@h``, whatever the password holds (``/``, ``#``,
    ``?``, ``:``, ``@`` or ``%``-escapes; ``mongodb+srv://``, several hosts); a userinfo that is
    not a plain user name (``https://TOKEN@host``) -> ``https://***@host``;
    ``?password=x&a=1`` -> ``?password=***&a=1``; ``{'token': 'x'}`` -> ``{'token': '***'}``.
    """

    def hide_userinfo(match: re.Match[str]) -> str:
        userinfo = match.group("userinfo")
        user, colon, _ = userinfo.partition(":")
        shown = user if _PLAIN_USER.fullmatch(user) and not _TOKEN_PREFIX.match(user) else "***"
        if not colon and shown == user:  # a user without a password: nothing to hide
            return match.group(0)
        after = _after_userinfo(userinfo, match.group("after"))
        return f"{match.group('scheme')}{shown}{':***' if colon else ''}@{after}"

    def hide_bare_userinfo(match: re.Match[str]) -> str:
        return f"{match.group('user')}:***@{_after_userinfo(match.group('secret'), match.group('after'))}"

    def hide_value(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if value[:1] in {"'", '"'} else ""
        return f"{match.group('key')}{quote}***{quote}"

    text = _USERINFO.sub(hide_userinfo, text)
    text = _BARE_USERINFO.sub(hide_bare_userinfo, text)
    text = _SECRET_ASSIGNMENT.sub(hide_value, text)
    return _SECRET_ITEM.sub(hide_value, text)


def apply_backspaces_and_linefeeds(text: str) -> str:
    """Render ``\\r`` and ``\\b`` the way a terminal shows them, line by line.

    Progress bars that redraw a line with ``\\r`` are stored as their final state. A ``\\r`` that
    ends the text is kept, so the next chunk of output can still overwrite that line. Use it as
    ``ex.captured_out_filter = apply_backspaces_and_linefeeds``.
    """
    lines = text.split("\n")
    rendered = []
    last_line = len(lines) - 1
    for index, line in enumerate(lines):
        chars: list[str] = []
        cursor = 0
        for position, char in enumerate(line):
            if char == "\r" and not (index == last_line and position == len(line) - 1):
                cursor = 0
                continue
            if char == "\b":
                cursor = max(0, cursor - 1)
                continue
            if char == "\r":  # the trailing one: keep it at the end of the line
                cursor = len(chars)
            if cursor < len(chars):
                chars[cursor] = char
            else:
                chars.append(char)
            cursor += 1
        rendered.append("".join(chars))
    return "\n".join(rendered)
