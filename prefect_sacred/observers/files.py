"""Crash-safe file writes shared by the observers that keep files on local disk."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

__all__ = ["copy_atomic", "write_atomic", "write_failure_file"]


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """Open a new temporary file beside the target, for a write-then-rename.

    Unlike :func:`tempfile.mkstemp` (always 0600) it is created with the umask's permissions,
    as a plain ``open`` would, so the renamed file is readable like Sacred's.
    """
    for _ in range(100):
        path = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")


def write_atomic(path: str, text: str, durable: bool = False) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never a part.

    ``durable`` also syncs the data to disk before the rename, for files that are the only copy
    of many runs (TinyDB's ``metadata.json``).
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = _create_temporary(directory, name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="replace", newline="") as stream:
            stream.write(text)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def copy_atomic(source: str, target: str) -> None:
    """Copy ``source`` to ``target`` with a write-then-rename."""
    handle, temporary = _create_temporary(os.path.dirname(target), "copy")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        _remove_quietly(temporary)
        raise


def write_failure_file(directory: str, prefix: str, text: str) -> str:
    """Write what could not be delivered to a new file in ``directory`` and return its path.

    Falls back to the system's temporary directory when ``directory`` cannot be created, so
    the data is kept somewhere whatever the reason.
    """
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        directory = tempfile.gettempdir()
    handle, path = tempfile.mkstemp(prefix=prefix, suffix=".json", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
