"""Crash-safe file writes shared by the observers that keep files on local disk.

Besides the write-then-rename helpers: :class:`OutputFile`, captured output appended beat by
beat and written whole when the :class:`~prefect_sacred.observers.base.OutputDelta` does not
continue it (FileStorage's ``cout.txt``, TinyDB's live output), and :class:`RewriteSchedule`,
when a file that a cheaper journal keeps safe is worth rewriting (FileStorage's
``metrics.json``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from prefect_sacred.observers.base import OutputDelta

__all__ = [
    "OutputFile",
    "RewriteSchedule",
    "copy_atomic",
    "read_text",
    "replacing",
    "write_atomic",
    "write_failure_file",
    "write_private",
]


def _create_temporary(directory: str, name: str, mode: int = 0o666) -> tuple[int, str]:
    """Open a new temporary file beside the target, for a write-then-rename.

    Unlike :func:`tempfile.mkstemp` (always 0600) it is created with the umask's permissions,
    as a plain ``open`` would, so the renamed file is readable like Sacred's.
    """
    for _ in range(100):
        path = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), path
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


def write_private(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only (journals, failure dumps)."""
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = _create_temporary(directory, name, 0o600)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


@contextmanager
def replacing(path: str, before: Callable[[str], None] | None = None) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the ``with`` block succeeds (a
    write-then-rename, as :func:`write_atomic`, for files written piece by piece).

    ``before(temporary_path)`` is called once the new content is complete and before it
    replaces ``path`` (an upload of it); if it raises, ``path`` is left as it was.
    """
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = _create_temporary(directory, name)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
        if before is not None:
            before(temporary)
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


def read_text(path: str) -> str | None:
    """The text of ``path`` exactly as written (no newline translation); None if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            return handle.read()
    except OSError:
        return None


class OutputFile:
    """A run's captured output in a text file, appended to beat by beat.

    Only a count of the characters stored is kept, never the output: :meth:`update` appends what
    the beat's :class:`~prefect_sacred.observers.base.OutputDelta` adds to them and writes the
    whole ``captured_out`` (atomically) when the delta does not continue them or there is none.

    Args:
        path: The file.
        stored: Characters already in the file; -1 when unknown (the next update writes it whole).
    """

    def __init__(self, path: str, stored: int = 0) -> None:
        self.path = path
        self.stored = stored

    def update(self, captured_out: str, output_delta: OutputDelta | None) -> None:
        """Store the output of a beat (``captured_out`` is read now and not kept)."""
        new = output_delta.appended_to(self.stored) if output_delta is not None else None
        stored, self.stored = self.stored, -1  # unknown until the write succeeded
        if new is None:
            self._in_directory(write_atomic, self.path, captured_out)
            self.stored = len(captured_out)
        elif new:
            self._in_directory(_append, self.path, new)
            self.stored = stored + len(new)
        else:
            self.stored = stored

    def _in_directory(self, write: Callable[[str, str], None], path: str, text: str) -> None:
        """``write(path, text)``, creating the file's directory if it is missing."""
        try:
            write(path, text)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write(path, text)

    def read(self) -> str | None:
        """The stored output; None when the file is missing."""
        return read_text(self.path)

    def remove(self) -> None:
        """Delete the file, if it exists."""
        _remove_quietly(self.path)
        self.stored = 0


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8", errors="replace", newline="") as handle:
        handle.write(text)


class RewriteSchedule:
    """When to rewrite a file that grows, whose content a cheaper append keeps safe meanwhile.

    A rewrite is due the first time, then while rewrites are cheap (under ``cheap_seconds``, at
    most once per 20x their duration), and beyond that only once the size grew by ``growth``
    since the last rewrite: the amortised cost of a beat is proportional to what is new, not to
    the whole file, whatever the beat interval.
    """

    growth = 0.25
    cheap_seconds = 0.05

    def __init__(self) -> None:
        self.size_written = -1  # -1: never written
        self.written_at = 0.0
        self.write_seconds = 0.0

    def is_due(self, size: int) -> bool:
        """Whether a file of ``size`` (any unit that grows with it) should be rewritten now."""
        if self.size_written < 0:
            return True
        if size <= self.size_written:
            return False
        if size >= (1 + self.growth) * self.size_written:
            return True
        waited = time.monotonic() - self.written_at
        return self.write_seconds < self.cheap_seconds and waited >= 20 * self.write_seconds

    @contextmanager
    def rewriting(self, size: int) -> Iterator[None]:
        """Time the rewrite in the ``with`` block; it counts only if the block succeeds."""
        began = time.monotonic()
        yield
        self.written_at = time.monotonic()
        self.write_seconds = self.written_at - began
        self.size_written = size
