"""The captured output of a Mongo run: the recent part in the runs document, all of it in GridFS.

Sacred re-sends the whole output on every heartbeat and fails once the document passes 16 MB.
Here a heartbeat takes what the run's :class:`~prefect_sacred.observers.base.OutputDelta` says
was added (the whole output only when earlier output was rewritten or no delta came), and once
the output is longer than ``limit`` characters, the runs document holds

* ``captured_out``: ``"[N earlier characters are in GridFS file captured_out://<runs>/<id>]\\n"``
  and then the last ``limit`` characters (what Omniboard shows);
* ``captured_out_file``: the id of a GridFS file holding the output from its first character.

The file grows by whole chunks only (``storage.AppendOnlyGridFile``), so a heartbeat at
20 MB of output costs about what it costs at none: one update of the runs document, plus one
chunk per 255 KB of new output. Rewriting the chunk being filled on every beat would send up to
255 KB more per beat. The bytes of that unfinished chunk wait in memory and are safe all the
same: a chunk holds at most ``limit`` bytes (so at most ``limit`` characters) and the document's
tail, written on every beat, contains them; with a ``limit`` below the 16 KB chunk floor, the
tail is as long as the unstored bytes. The end of the run stores the short last chunk, so the
file of a finished run is its whole output for any GridFS reader; :func:`read_captured_out`
gives the whole output at any time, also of a live run or of one whose process died.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.mongo.storage import GRID_CHUNK, AppendOnlyGridFile

__all__ = ["CapturedOutput", "read_captured_out"]

_HEADER = "[{skipped} earlier characters are in GridFS file {filename}]\n"
_HEADER_RE = re.compile(r"\[(\d+) earlier characters are in GridFS file [^\]\n]*\]\n")
_MIN_CHUNK = 16 * 1024


class CapturedOutput:
    """One run's output, as the runs document fields and a GridFS file that grows.

    :meth:`update` takes the output in memory (what the run's delta adds, or the whole output),
    :meth:`write` stores what it added in GridFS (and can be repeated after a failure),
    :meth:`changed_fields` gives what the document must show.

    The caller's output string is not kept from one beat to the next, only the new part of each
    (copied when it is the whole string): holding it would make the run copy its whole output on
    the next append (the string is no longer its alone) and free the old copy inside the next
    beat, both proportional to the output's size.
    """

    def __init__(self, database: Any, runs_name: str, run_id: Any, limit: int) -> None:
        self.database = database
        self.run_id = run_id
        self.limit = max(0, limit)
        # The unstored bytes are under one chunk: the document's tail is at least that long. A
        # floor keeps a small ``limit`` from cutting the output into thousands of tiny chunks.
        self.chunk_size = min(GRID_CHUNK, max(self.limit, _MIN_CHUNK))
        self.filename = f"captured_out://{runs_name}/{run_id}"
        self.file: AppendOnlyGridFile | None = None
        self._parts: list[str] = []  # the output so far, in the pieces it came in
        self._length = 0  # characters in ``_parts``, all handed to ``file`` once it exists
        self._stale: list[AppendOnlyGridFile] = []  # files of rewritten output, to delete
        self._shown: dict[str, Any] = {"captured_out": "", "captured_out_file": None}
        self._last_delta: OutputDelta | None = None

    @property
    def text(self) -> str:
        """The whole output so far (a failure dump saves it)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def update(self, captured_out: str, delta: OutputDelta | None = None) -> None:
        """Take the output so far (in memory only): ``delta`` appended, or ``captured_out`` whole.

        ``delta`` is the run's account of what changed since the previous beat. When it
        continues what is held here, only its text is taken and ``captured_out`` is not read;
        otherwise (no delta, or a ``captured_out_filter`` rewrote earlier output) the output is
        ``captured_out``, and a GridFS file holding the old one is replaced.
        """
        if delta is not None and delta is self._last_delta:
            return  # the same beat sent again after it raised: its output is already here
        self._last_delta = delta
        new = delta.appended_to(self._length) if delta is not None else None
        if new is None:
            if self.file is not None:
                self.file.pending = bytearray()  # only its stored chunks are left, to delete
                self._stale.append(self.file)
                self.file = None
            self._parts, self._length = [], 0
            new = captured_out
        self._append(new, captured_out)

    def _append(self, new: str, captured_out: str) -> None:
        if not new:
            return
        # Pieces, never the caller's string itself: holding it would make the run copy its output.
        self._parts.extend(_pieces(new) if new is captured_out else [new])
        self._length += len(new)
        if self.file is not None:
            self.file.append(new.encode("utf-8", errors="replace"))
        elif self._length > self.limit:
            self.file = AppendOnlyGridFile(
                self.database, self.filename, metadata={"run_id": self.run_id}, chunk_size=self.chunk_size
            )
            self.file.append(self.text.encode("utf-8", errors="replace"))
        if len(self._parts) > 256:  # joined once per 256 beats, not on every beat
            self._parts = ["".join(self._parts)]

    def write(self, final: bool = False) -> None:
        """Store the full chunks (with ``final``, all of the output) and delete replaced files."""
        while self._stale:
            self._stale[0].delete()
            self._stale.pop(0)
        if self.file is not None:
            self.file.flush(final)

    def changed_fields(self) -> dict[str, Any]:
        """``captured_out`` and ``captured_out_file``, those that changed since the last call."""
        if self.file is None:
            fields: dict[str, Any] = {"captured_out": self.text, "captured_out_file": None}
        else:
            # Normally ``limit``; longer while bytes wait to be stored, so the document has them.
            shown = max(self.limit, min(len(self.file.pending), self.chunk_size))
            skipped = max(0, self._length - shown)
            header = _HEADER.format(skipped=skipped, filename=self.filename)
            fields = {"captured_out": header + self._last(shown), "captured_out_file": self.file.file_id}
        changed = {key: value for key, value in fields.items() if self._shown.get(key) != value}
        self._shown = fields
        return changed

    def resume(self, doc: dict[str, Any]) -> None:
        """Continue the output stored by another process, so :meth:`write` can complete the file."""
        text = read_captured_out(self.database, doc)
        self._parts, self._length = [text], len(text)
        self._shown = {key: doc.get(key) for key in self._shown}
        if doc.get("captured_out_file") is None:
            return
        self.file = AppendOnlyGridFile.open(self.database, doc["captured_out_file"])
        stored = 0
        if self.file is None:
            self.file = AppendOnlyGridFile(
                self.database, self.filename, metadata={"run_id": self.run_id}, chunk_size=self.chunk_size
            )
        else:
            stored = self.file.length
        self.file.append(text.encode("utf-8", errors="replace")[stored:])

    def _last(self, count: int) -> str:
        """The last ``count`` characters of the output, joining only the pieces they are in."""
        pieces: list[str] = []
        total = 0
        for piece in reversed(self._parts):
            if total >= count:
                break
            pieces.append(piece)
            total += len(piece)
        tail = "".join(reversed(pieces))
        return tail[len(tail) - min(count, len(tail)) :]


def read_captured_out(database: Any, doc: dict[str, Any]) -> str:
    """The whole captured output of a run, from its runs document ``doc`` and GridFS.

    Right for finished runs, live ones and runs whose process died: GridFS holds the output up
    to its last whole chunk, and the document's tail the rest.

    Args:
        database: The database of the runs collection (GridFS bucket ``fs``).
        doc: The run's document, with at least ``captured_out`` and ``captured_out_file``.
    """
    import gridfs

    text = str(doc.get("captured_out") or "")
    match = _HEADER_RE.match(text)
    # Without the header the document holds all of it (a file named still is a leftover, e.g.
    # of the run an ``overwrite`` replaced).
    if doc.get("captured_out_file") is None or match is None:
        return text
    skipped, tail = int(match.group(1)), text[match.end() :]
    try:
        data = gridfs.GridFS(database).get(doc["captured_out_file"]).read()
    except gridfs.errors.NoFile:
        data = b""
    # Not final: a character cut by the last chunk boundary is left out here and read from the tail.
    stored = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)
    if len(stored) < skipped:  # the file lags the document: a run that died during an outage
        return f"{stored}[{skipped - len(stored)} characters were not stored]\n{tail}"
    return stored + tail[len(stored) - skipped :]


def _pieces(text: str) -> list[str]:
    """``text`` as new strings: two slices (one copy), not ``text`` itself."""
    if len(text) < 2:
        return [text]
    half = len(text) // 2
    return [text[:half], text[half:]]
