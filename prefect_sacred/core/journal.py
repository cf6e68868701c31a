"""``RunJournal``: one run's write-ahead journal on local disk.

A directory per run (``~/.prefect_sacred/journal/<key>/``, or under ``PREFECT_SACRED_JOURNAL_DIR``;
the key is the flow run's id), readable by its owner only:

* ``journal.jsonl``: the records (see :mod:`prefect_sacred.core.records`);
* ``observers.json`` and ``observer-<slot>.pickle``: the run's observers, pickled at the start
  when they can resume a run (``reattach``), so ``prefect-sacred sync`` can rebuild them;
* ``cursor-<slot>``: the ``seq`` of the last record each observer received (one line per
  delivery; the last complete line counts);
* ``lock``: held (``flock``) by the process writing the run; the kernel releases it when that
  process dies, however it dies, so a free lock means nobody else is delivering.

Records are plain appends flushed to the kernel at once: they survive the death of the process
(SIGKILL, OOM) without ``fsync``, which only a crash of the machine itself would need.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect_sacred.core.records import dump_record, encode_points, encode_time, parse_records
from prefect_sacred.observers.files import write_private
from prefect_sacred.serialization import utcnow

if TYPE_CHECKING:
    from prefect_sacred.core.metrics import PointBatch

__all__ = [
    "JOURNAL_DIR_ENV_VAR",
    "JOURNAL_ENV_VAR",
    "JournalLocked",
    "RunJournal",
    "journal_enabled",
    "journal_root",
    "pickled_observer",
    "resumable",
]

logger = logging.getLogger("prefect_sacred.journal")

#: Where journals are kept (default ``~/.prefect_sacred/journal``).
JOURNAL_DIR_ENV_VAR = "PREFECT_SACRED_JOURNAL_DIR"
#: ``0``, ``off`` or ``false`` turns the journal off.
JOURNAL_ENV_VAR = "PREFECT_SACRED_JOURNAL"
_LOG = "journal.jsonl"
_MANIFEST = "observers.json"


class JournalLocked(RuntimeError):
    """Another live process holds the journal: it is still recording its run."""


def journal_root() -> str:
    """The directory holding every run's journal on this machine."""
    configured = os.environ.get(JOURNAL_DIR_ENV_VAR)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".prefect_sacred", "journal")


def journal_enabled() -> bool:
    """Whether runs keep a journal (``PREFECT_SACRED_JOURNAL`` unset or not ``0``/``off``/``false``)."""
    return os.environ.get(JOURNAL_ENV_VAR, "").strip().lower() not in {"0", "off", "false", "no"}


def resumable(observer: Any) -> bool:
    """Whether ``observer`` can continue a run started elsewhere (it defines its own ``reattach``)."""
    from prefect_sacred.observers.base import RunObserver

    method = getattr(type(observer), "reattach", None)
    return callable(method) and method is not RunObserver.reattach


class RunJournal:
    """The journal of one run. Build it with :meth:`create` (a new run) or :meth:`open` (sync).

    Appends are thread-safe; each cursor is written by one thread (its observer's worker).
    """

    def __init__(self, path: str, next_seq: int, lock_fd: int) -> None:
        self.path = path
        self._next_seq = next_seq
        self._lock_fd = lock_fd
        self._append_lock = threading.Lock()
        self._fd: int | None = os.open(
            os.path.join(path, _LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self._cursor_fds: dict[int, int] = {}
        #: Why writing failed, if it did (the run goes on; the journal is then incomplete).
        self.broken: str | None = None

    # --- finding and opening ------------------------------------------------------------------

    @classmethod
    def create(cls, key: str | None, identity: dict[str, Any], root: str | None = None) -> RunJournal:
        """A new journal for a run starting now, its first record the run's identity.

        Args:
            key: The directory's name (the flow run id); None for a random one.
            identity: What identifies the run (``run_id``, ``flow_run_id``...); pid, host and
                start time are added.
            root: Where journals are kept (default :func:`journal_root`).
        """
        base = root or journal_root()
        os.makedirs(base, mode=0o700, exist_ok=True)
        name = _safe_name(key) if key else uuid.uuid4().hex
        path = os.path.join(base, name)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # the same flow run again (a retry in a new process)
            path = os.path.join(base, f"{name}-{uuid.uuid4().hex[:8]}")
            os.mkdir(path, 0o700)
        lock_fd = _lock(path, wait=0.0)
        assert lock_fd is not None
        journal = cls(path, 0, lock_fd)
        journal.append(
            "run",
            **identity,
            pid=os.getpid(),
            host=socket.gethostname(),
            start=encode_time(utcnow()),
        )
        return journal

    @classmethod
    def open(cls, path: str, wait: float = 0.0) -> RunJournal:
        """An existing journal, to deliver what it holds; a torn last line is cut off.

        Raises:
            JournalLocked: its process is alive (still holding it after ``wait`` seconds).
            FileNotFoundError: ``path`` holds no journal.
        """
        log = os.path.join(path, _LOG)
        if not os.path.isfile(log):
            raise FileNotFoundError(f"no journal in {path}")
        lock_fd = _lock(path, wait)
        if lock_fd is None:
            raise JournalLocked(f"the process recording {path} is still running")
        with open(log, "rb") as handle:
            data = handle.read()
        records, complete = parse_records(data)
        if complete < len(data):
            os.truncate(log, complete)
        return cls(path, (records[-1]["seq"] + 1) if records else 0, lock_fd)

    @staticmethod
    def find(key: str, root: str | None = None) -> str | None:
        """The newest journal directory of ``key`` (a flow run id) on this machine, if any."""
        base = root or journal_root()
        name = _safe_name(key)
        try:
            candidates = [
                os.path.join(base, entry)
                for entry in os.listdir(base)
                if entry == name or entry.startswith(f"{name}-")
            ]
        except OSError:
            return None
        candidates = [path for path in candidates if os.path.isfile(os.path.join(path, _LOG))]
        return max(candidates, key=os.path.getmtime) if candidates else None

    @staticmethod
    def all(root: str | None = None) -> list[str]:
        """Every journal directory on this machine, oldest first."""
        base = root or journal_root()
        try:
            paths = [os.path.join(base, entry) for entry in os.listdir(base)]
        except OSError:
            return []
        found = [path for path in paths if os.path.isfile(os.path.join(path, _LOG))]
        return sorted(found, key=os.path.getmtime)

    # --- writing ------------------------------------------------------------------------------

    @staticmethod
    def is_held(path: str) -> bool:
        """Whether a live process holds the journal at ``path`` (its run's, stopped or not).

        The kernel lets go of the lock when that process dies, whatever killed it.
        """
        fd = _lock(path, wait=0.0)
        if fd is None:
            return True
        os.close(fd)
        return False

    @staticmethod
    def identity(path: str) -> dict[str, Any] | None:
        """The run's identity, the journal's first record, read alone (journals can be large)."""
        try:
            with open(os.path.join(path, _LOG), "rb") as handle:
                line = handle.readline()
        except OSError:
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) and record.get("kind") == "run" else None

    def append(self, kind: str, /, **fields: Any) -> int:
        """Append one record; returns its ``seq``."""
        with self._append_lock:
            seq = self._next_seq
            self._next_seq += 1
            data = dump_record({"seq": seq, "kind": kind, **fields}).encode("utf-8", "surrogatepass")
            self._write(data)
        return seq

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            if self.broken is None:
                self.broken = f"{type(exc).__name__}: {exc}"
                logger.warning("the run's journal %s cannot be written (%s)", self.path, self.broken)

    def add_points(self, metrics_by_name: PointBatch | dict[str, dict[str, list[Any]]]) -> int | None:
        """Journal metric points (packed, as the metrics logger drains them, or ``metrics_by_name``)."""
        if not metrics_by_name:
            return None
        return self.append("points", points=encode_points(metrics_by_name))

    def add_output(self, text: str) -> int | None:
        """Journal captured output (raw, in the order it was captured)."""
        if not text:
            return None
        return self.append("output", text=text)

    def add_event(self, event: str, /, **fields: Any) -> int:
        """Journal an observer event before any observer is given it."""
        return self.append("event", event=event, **fields)

    # --- observers and cursors ----------------------------------------------------------------

    def save_observers(self, observers: Sequence[Any], pickles: Sequence[bytes | str] = ()) -> None:
        """Keep how to rebuild each observer (slot = its position) for ``prefect-sacred sync``.

        Args:
            observers: The run's started observers.
            pickles: Each one's :func:`pickled_observer`, taken before the start (default: now).
        """
        manifest = []
        for slot, observer in enumerate(observers):
            data = pickles[slot] if slot < len(pickles) else pickled_observer(observer)
            entry: dict[str, Any] = {"slot": slot, "name": type(observer).__name__, "pickled": False}
            if isinstance(data, str):
                entry["why"] = data
            else:
                write_private(os.path.join(self.path, f"observer-{slot}.pickle"), data)
                entry["pickled"] = True
            manifest.append(entry)
        write_private(os.path.join(self.path, _MANIFEST), json.dumps(manifest).encode())

    def observer_slots(self) -> list[dict[str, Any]]:
        """The manifest: ``{"slot", "name", "pickled", "why"}`` per observer of the run."""
        try:
            with open(os.path.join(self.path, _MANIFEST), encoding="utf-8") as handle:
                slots: list[dict[str, Any]] = json.load(handle)
                return slots
        except (OSError, ValueError):
            return []

    def load_observer(self, slot: int) -> Any:
        """The observer of ``slot``, unpickled (raises if it cannot be)."""
        with open(os.path.join(self.path, f"observer-{slot}.pickle"), "rb") as handle:
            return pickle.load(handle)  # our own file, 0600

    def set_cursor(self, slot: int, seq: int) -> None:
        """Observer ``slot`` received every record up to ``seq``."""
        if self._fd is None:  # closed: a call that outlived the run's end must not reopen it
            return
        fd = self._cursor_fds.get(slot)
        try:
            if fd is None:
                fd = self._cursor_fds[slot] = os.open(
                    os.path.join(self.path, f"cursor-{slot}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                )
            os.write(fd, f"{seq}\n".encode())
        except OSError as exc:
            logger.warning("cannot write the delivery cursor in %s: %s", self.path, exc)

    def cursor(self, slot: int) -> int:
        """The ``seq`` of the last record observer ``slot`` received (-1: none)."""
        try:
            with open(os.path.join(self.path, f"cursor-{slot}"), "rb") as handle:
                data = handle.read()
        except OSError:
            return -1
        lines = data[: data.rfind(b"\n") + 1].split()
        return int(lines[-1]) if lines else -1

    # --- reading and ending -------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in order."""
        with open(os.path.join(self.path, _LOG), "rb") as handle:
            return parse_records(handle.read())[0]

    def close(self) -> None:
        """Stop writing and release the lock (the journal stays on disk)."""
        for fd in [self._fd, *self._cursor_fds.values(), self._lock_fd]:
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd, self._cursor_fds, self._lock_fd = None, {}, -1

    def delete(self) -> None:
        """Close and remove the journal: every observer received everything in it."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def pickled_observer(observer: Any) -> bytes | str:
    """``observer`` pickled, or why it cannot be kept (no ``reattach``, or pickling fails).

    Only an observer that can resume a run is worth keeping: sync continues runs with it.
    """
    if not resumable(observer):
        return "it cannot resume a run (no reattach)"
    try:
        data = pickle.dumps(observer)
    except Exception as exc:
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"[:300]
    return data


def _safe_name(key: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in str(key))[:120] or "run"


def _lock(path: str, wait: float) -> int | None:
    """Hold ``path``'s lock file; None when another process still holds it after ``wait`` s."""
    fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)
