"""Captured output, Sacred's ``fd``, ``sys`` and ``no`` modes, without losing the last lines.

``fd`` redirects file descriptors 1 and 2 into pipes that a reader thread copies to the terminal
and into a buffer: prints, Prefect's ``log_prints`` lines, C extensions and subprocesses are all
caught. Where ``sys.stdout``/``sys.stderr`` do not write to those descriptors (Jupyter, pytest),
they are teed at the Python level as well. Stopping restores the descriptors first and then
waits for the pipes to drain, so the tail is never lost (Sacred's ``fd`` mode drops it racily).

``fd`` capture is a process-wide resource: a run that starts while another run in the same
process holds it falls back to ``sys`` mode. ``sys`` mode routes writes by context variable, so
overlapping runs in one process each get only their own output. A thread started by a run's code
has no context: its writes go to the one live ``sys`` run that started before the thread, and
are not captured when several such runs are live.
"""

from __future__ import annotations

import codecs
import contextvars
import logging
import os
import sys
import threading
import time
from typing import Any, Protocol, TextIO

__all__ = [
    "CAPTURE_MODES",
    "USER_RECORD",
    "Capture",
    "UserLog",
    "start_capture",
]

#: Set on log records the user's code wrote (``_log``): they stay in the captured output.
USER_RECORD = "prefect_sacred_user"

CAPTURE_MODES = ("fd", "sys", "no")
DEFAULT_CAPTURE_MODE = "fd" if os.name == "posix" else "sys"

logger = logging.getLogger(__name__)


class Capture(Protocol):
    mode: str

    def read(self) -> str:
        """Text written since the previous read."""
        ...

    def stop(self) -> None:
        """Stop capturing; everything written before this call is still readable afterwards."""
        ...

    def bind(self) -> contextvars.Token[Any] | None:
        """Route output of the calling context into this capture (only ``sys`` mode needs it)."""
        ...


def start_capture(mode: str) -> Capture:
    """Start capturing output in ``mode`` (one of ``CAPTURE_MODES``)."""
    if mode == "fd":
        if _fd_lock.acquire(blocking=False):
            try:
                return _FdCapture()
            except Exception:
                _fd_lock.release()
                raise
        logger.warning("another run in this process captures fds 1 and 2; using capture mode 'sys'")
        mode = "sys"
    if mode == "sys":
        return _SysCapture()
    if mode == "no":
        return _NoCapture()
    raise ValueError(f"capture mode must be one of {', '.join(CAPTURE_MODES)}, not {mode!r}")


class _NoCapture:
    mode = "no"

    def read(self) -> str:
        return ""

    def stop(self) -> None:
        pass

    def bind(self) -> None:
        return None


_fd_lock = threading.Lock()


class _FdCapture:
    mode = "fd"

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._flush_std_streams()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self._pumps: list[threading.Thread] = []
        self._read_ends: list[int] = []
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            self._read_ends.append(read_end)
            os.dup2(write_end, fd)
            os.close(write_end)
            pump = threading.Thread(
                target=self._pump,
                args=(read_end, self._saved[fd]),
                daemon=True,
                name=f"prefect-sacred-capture-fd{fd}",
            )
            pump.start()
            self._pumps.append(pump)
        self._stopped = False
        self._engine_lines = _EngineLines(self._saved[2])
        self._engine_lines.install()
        self._python_streams: dict[str, Any] = {}
        for name, fd in (("stdout", 1), ("stderr", 2)):
            stream = getattr(sys, name)
            if not _writes_to_fd(stream, fd):
                self._python_streams[name] = stream
                setattr(sys, name, _BufferTee(stream, self._append_text))

    def _append_text(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text.encode("utf-8", errors="replace"))

    def _pump(self, read_end: int, terminal: int) -> None:
        while chunk := os.read(read_end, 1 << 16):
            with self._lock:
                self._chunks.append(chunk)
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(terminal, view) :]
            except OSError:  # the terminal went away; keep capturing regardless
                pass

    def read(self) -> str:
        with self._lock:
            data = b"".join(self._chunks)
            self._chunks.clear()
        return self._decoder.decode(data, final=self._stopped)

    def stop(self) -> None:
        if self._stopped:
            return
        self._flush_std_streams()
        self._engine_lines.remove()
        for name, stream in self._python_streams.items():
            if isinstance(getattr(sys, name), _BufferTee):
                setattr(sys, name, stream)
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes our write end of the pipe: the pump sees EOF once drained
        self._drain_pumps()
        if not any(pump.is_alive() for pump in self._pumps):
            for fd in [*self._saved.values(), *self._read_ends]:
                os.close(fd)
        self._stopped = True
        _fd_lock.release()

    def _drain_pumps(self) -> None:
        """Wait until every byte written before stop is read; not for writers that linger.

        A subprocess that outlives the run keeps the pipe open, so EOF may never come. Waiting
        stops once nothing is left unread and the grace period is over, or at the hard limit.
        """
        started = time.monotonic()
        while any(pump.is_alive() for pump in self._pumps):
            for pump in self._pumps:
                pump.join(0.05)
            waited = time.monotonic() - started
            if waited > 60 or (waited > 2 and not any(_unread(fd) for fd in self._read_ends)):
                logger.warning(
                    "output capture: a process still holds the run's stdout/stderr after %.0f s; "
                    "output it writes from now on is not captured",
                    waited,
                )
                return

    def bind(self) -> None:
        return None

    @staticmethod
    def _flush_std_streams() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


class UserLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The run's logger as the user's code gets it (``_log``): its lines are the run's output."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), USER_RECORD: True}
        return msg, kwargs


class _EngineLines(logging.Filter):
    """Prefect's own console lines ("Running hook...", "View at...") go to the terminal only.

    While fd capture holds fds 1 and 2, a record from a ``prefect`` logger that the user's code
    did not write is formatted by Prefect's console handler and written to the saved terminal
    descriptor, past the capture, instead of being emitted into it.
    """

    def __init__(self, terminal: int) -> None:
        super().__init__()
        self._terminal = terminal
        self._handlers: list[logging.Handler] = []

    def install(self) -> None:
        for source in (logging.getLogger("prefect"), logging.getLogger()):
            for handler in source.handlers:
                if type(handler).__name__ == "PrefectConsoleHandler" and handler not in self._handlers:
                    handler.addFilter(self)
                    self._handlers.append(handler)

    def remove(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect") or getattr(record, USER_RECORD, False):
            return True
        handler = next((h for h in self._handlers if record.levelno >= h.level), None)
        if handler is None:
            return False
        try:
            view = memoryview((handler.format(record) + "\n").encode("utf-8", errors="replace"))
            while view:
                view = view[os.write(self._terminal, view) :]
        except (OSError, ValueError):  # the terminal went away: the line is only Prefect's
            pass
        return False


def _unread(fd: int) -> int:
    """Bytes waiting in pipe ``fd``."""
    import fcntl  # POSIX only, like fd capture itself
    import struct
    import termios

    try:
        count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0
    return count


#: Where stream wrappers keep the stream they write to (tqdm's ``DummyTqdmFile.file``...).
_WRAPPED = ("file", "stream", "_stream", "_wrapped", "__wrapped__", "wrapped")


def _writes_to_fd(stream: Any, fd: int, depth: int = 3) -> bool:
    """Whether ``stream`` (or the stream a wrapper around it writes to) is descriptor ``fd``."""
    try:
        return bool(stream.fileno() == fd)
    except Exception:  # io.UnsupportedOperation, or no fileno at all
        pass
    if depth == 0:
        return False
    for name in _WRAPPED:
        inner = getattr(stream, name, None) if name in getattr(stream, "__dict__", {}) else None
        if inner is not None and inner is not stream and _writes_to_fd(inner, fd, depth - 1):
            return True
    return False


class _BufferTee:
    """A Python-level stream that also hands every write to ``append``."""

    def __init__(self, stream: Any, append: Any) -> None:
        self._stream = stream
        self._append = append

    def write(self, text: str) -> int:
        self._append(text)
        written = self._stream.write(text)
        # Wrappers (tqdm's, hyperopt's) return None: what they took is the whole text.
        return len(text) if written is None else int(written)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_sys_sink: contextvars.ContextVar[_SysCapture | None] = contextvars.ContextVar(
    "prefect_sacred_sys_sink", default=None
)


class _Tee:
    """Replaces ``sys.stdout``/``sys.stderr`` while any ``sys`` capture is active."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        sink = _sys_sink.get() or _orphan_sink()
        if sink is not None:
            sink._append(text)
        written = self._stream.write(text)
        return len(text) if written is None else int(written)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _orphan_sink() -> _SysCapture | None:
    """The run a write from a thread without a run context belongs to, if only one can own it.

    A thread the run's code starts (``threading.Thread``, a DataLoader's workers) does not
    inherit the run's context. Its writes go to the one live ``sys`` capture that started
    before the thread did; with several such runs (or none) they are not captured.
    """
    thread = threading.current_thread()
    owners = [capture for capture in _sys_captures if thread not in capture._threads_before]
    return owners[0] if len(owners) == 1 else None


_tee_lock = threading.Lock()
_tee_users = 0
#: The live ``sys`` captures of this process (a tuple, replaced whole: writes read it unlocked).
_sys_captures: tuple[_SysCapture, ...] = ()


class _SysCapture:
    mode = "sys"

    def __init__(self) -> None:
        global _tee_users, _sys_captures
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._stopped = False
        #: Threads that were running before this run: their context-less writes are not its.
        self._threads_before = frozenset(threading.enumerate())
        with _tee_lock:
            if _tee_users == 0:
                sys.stdout = _Tee(sys.stdout)
                sys.stderr = _Tee(sys.stderr)
            _tee_users += 1
            _sys_captures = (*_sys_captures, self)

    def bind(self) -> contextvars.Token[Any]:
        return _sys_sink.set(self)

    def _append(self, text: str) -> None:
        if not self._stopped:
            with self._lock:
                self._parts.append(text)

    def read(self) -> str:
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
        return text

    def stop(self) -> None:
        global _tee_users, _sys_captures
        if self._stopped:
            return
        self._stopped = True
        with _tee_lock:
            _sys_captures = tuple(capture for capture in _sys_captures if capture is not self)
            _tee_users -= 1
            if _tee_users == 0:
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _Tee):
                        setattr(sys, name, stream._stream)
