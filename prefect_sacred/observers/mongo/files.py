"""GridFS uploads of the MongoObserver: sources and resources once, artifacts, oversized values.

Sacred looks sources up by ``(filename, md5)``, but pymongo 4 no longer writes ``md5`` into
``fs.files``, so every run re-uploads them. Here ``md5`` is written explicitly and looked up
alone, so identical files are stored once across runs and paths. Values too large for the runs
document (``info``, ``result``, ``config``) are stored as JSON files the document refers to.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from typing import Any

from prefect_sacred.observers.mongo.storage import sanitize
from prefect_sacred.utils import md5_of_file

__all__ = ["RunFiles", "put_once", "save_sources"]

logger = logging.getLogger("prefect_sacred.mongo")

# (kind, name, filename, metadata, content_type); kind is "resource" or "artifact"
FileItem = tuple[str, str, str, Any, Any]


def put_once(database: Any, fs: Any, path: str, md5: str) -> Any:
    """Upload ``path`` unless a file with this md5 is stored already; its GridFS id."""
    found = database["fs.files"].find_one({"md5": md5}, {"_id": 1})
    if found is not None:
        return found["_id"]
    with open(path, "rb") as handle:
        return fs.put(handle, filename=path, md5=md5)


def save_sources(database: Any, fs: Any, ex_info: dict[str, Any]) -> dict[str, Any]:
    """Sacred's ``experiment`` field: ``ex_info`` with each source as ``[relpath, file id]``."""
    experiment = sanitize(dict(ex_info))
    base_dir = ex_info.get("base_dir", "")
    sources = []
    for relpath, md5 in ex_info.get("sources", []):
        sources.append([relpath, put_once(database, fs, os.path.join(base_dir, relpath), md5)])
    return {**experiment, "sources": sources}


class RunFiles:
    """The GridFS files of one run: resources and artifacts, and values spilled from the document.

    A resource or artifact whose upload fails stays in :attr:`pending` and goes with the next
    :meth:`upload`, so what a run produced during an outage is stored once the server is back.
    """

    def __init__(self, database: Any, fs: Any, runs_name: str, run_id: Any) -> None:
        self.database, self.fs, self.runs_name, self.run_id = database, fs, runs_name, run_id
        self.pending: list[FileItem] = []
        self._spilled: dict[str, Any] = {}

    def add(self, item: FileItem) -> None:
        if item not in self.pending:
            self.pending.append(item)

    def upload(self, entry: dict[str, Any]) -> tuple[set[str], list[Exception]]:
        """Upload the pending files into ``entry``'s ``resources``/``artifacts``; changed fields, errors."""
        changed: set[str] = set()
        errors: list[Exception] = []
        for item in list(self.pending):
            try:
                changed.add(self._upload(entry, *item))
            except Exception as exc:
                errors.append(exc)
                continue
            self.pending.remove(item)
        return changed, errors

    def _upload(
        self, entry: dict[str, Any], kind: str, name: str, filename: str, metadata: Any, content_type: Any
    ) -> str:
        if kind == "resource":
            md5 = md5_of_file(filename)
            put_once(self.database, self.fs, filename, md5)
            resources = entry.setdefault("resources", [])
            if [filename, md5] not in resources:
                resources.append([filename, md5])
            return "resources"
        if content_type is None:  # as Sacred: guessed from the file, not from the artifact's name
            content_type = mimetypes.guess_type(filename)[0]
        with open(filename, "rb") as handle:
            file_id = self.fs.put(
                handle,
                filename=f"artifact://{self.runs_name}/{self.run_id}/{name}",
                metadata=metadata,
                content_type=content_type,
            )
        entry.setdefault("artifacts", []).append({"name": name, "file_id": file_id})
        return "artifacts"

    def spill(self, field: str, value: Any, size: int, keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """Store ``value`` (``size`` BSON bytes) as a JSON file; the reference for the document.

        The reference keeps the keys named in ``keep`` (``info.metrics``, which Omniboard needs).
        The copy an earlier beat stored for ``field`` is deleted.
        """
        from bson import json_util

        filename = f"{field}://{self.runs_name}/{self.run_id}"
        data = json_util.dumps(value).encode()
        file_id = self.fs.put(data, filename=filename, content_type="application/json")
        previous = self._spilled.get(field)
        self._spilled[field] = file_id
        if previous is not None:
            try:
                self.fs.delete(previous)
            except Exception:  # a stale copy is harmless; the reference names the new one
                pass
        reference: dict[str, Any] = {"spilled_to_gridfs": filename, "file_id": file_id, "bytes": size}
        if isinstance(value, dict):
            reference.update({key: value[key] for key in keep if key in value})
        logger.info("%s of run %s is %d bytes: stored in GridFS as %s", field, self.run_id, size, filename)
        return reference
