"""Small helpers both halves of the package use: file digests and credential redaction.

``flows/`` (the experiment side) and ``observers/`` (the storage side) both import from here and
never from each other's internals, so either can be imported alone.
"""

from __future__ import annotations

import hashlib
import os
import re

__all__ = ["md5_of_file", "redact"]


def md5_of_file(path: str | os.PathLike[str]) -> str:
    """The hex md5 of a file's content, read in 1 MB blocks (how Sacred names stored files)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#\s]+)@")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|key|credentials?)=)[^&\s]*")


def redact(text: str) -> str:
    """Hide credentials in URLs inside ``text``: ``mongodb://u:pw@h`` -> ``mongodb://u:***@h``."""

    def hide(match: re.Match[str]) -> str:
        user = match.group("userinfo").split(":", 1)[0]
        return f"{match.group('scheme')}{user}:***@"

    return _SECRET_QUERY.sub(r"\g<key>***", _CREDENTIALS.sub(hide, text))
