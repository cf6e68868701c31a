"""FileStorage's layout in a bucket, written once for S3 and Google Cloud Storage.

``PREFIX/<id>/{run.json, config.json, cout.txt, info.json, metrics.json, <artifacts>}`` and
``PREFIX/_sources``, ``PREFIX/_resources`` holding ``<stem>_<md5><ext>``, as FileStorage and
Sacred's own S3/GCS observers store them, with these differences from Sacred's:

* run ids are claimed by creating ``<id>/run.json`` only if it does not exist (a conditional
  create), so concurrent processes never share an id;
* sources and resources are stored once at ``PREFIX/_sources|_resources``, where ``run.json``
  says they are (Sacred nests them under each run and uploads them every time);
* ``cout.txt`` holds the whole output and the bytes uploaded per beat grow with what is new,
  not with the history (:mod:`~prefect_sacred.observers.object_store.growing` states the rule);
* the bucket is checked at the start of the run: a bucket that is missing (S3 creates it),
  unreachable or refused fails the run in seconds with one line and no secret;
* artifact names that escape the run or would overwrite the observer's files are refused.
"""

from __future__ import annotations

import datetime as dt
import json
import mimetypes
import os
import posixpath
import uuid
from typing import Any

from prefect_sacred.observers.base import InvalidArtifactName, OutputDelta, check_artifact_name
from prefect_sacred.observers.object_store.bucket import Bucket, join_key, relative_key
from prefect_sacred.observers.object_store.growing import MetricsObject, OutputObject, read_metrics
from prefect_sacred.observers.run_entry import RunEntryObserver
from prefect_sacred.serialization import flatten, isoformat
from prefect_sacred.utils import md5_of_file

__all__ = ["ObjectStoreObserver"]

_JSON = "application/json"
_OWN_FILES = {"run.json", "config.json", "cout.txt", "info.json", "metrics.json"}
_OWN_DIRECTORIES = ("cout.txt.parts/", "metrics.journal/")
_FINISHED = {"COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT"}


class ObjectStoreObserver(RunEntryObserver):
    """Stores each run below ``basedir/<id>/`` in a bucket; subclasses provide the bucket.

    Args:
        bucket: The bucket's name.
        basedir: The key prefix holding one "directory" per run.
        resource_dir: Prefix for resources (default ``basedir/_resources``).
        source_dir: Prefix for sources (default ``basedir/_sources``).
        priority: Observers are called in descending priority; the first id returned wins.
    """

    scheme = "objects"
    _output: OutputObject
    _metrics: MetricsObject

    def __init__(
        self,
        bucket: str,
        basedir: str,
        resource_dir: str | None = None,
        source_dir: str | None = None,
        priority: int = 20,
    ) -> None:
        self.bucket = bucket
        self.basedir = join_key(basedir)
        self.resource_dir = join_key(resource_dir or join_key(self.basedir, "_resources"))
        self.source_dir = join_key(source_dir or join_key(self.basedir, "_sources"))
        self.priority = priority
        self.dir: str | None = None  # the run's key prefix: basedir/<id>
        self.run_entry: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self._client: Bucket | None = None
        self._checked = False
        # Content-addressed keys known to exist. Shared by copies on purpose: it holds facts
        # about the bucket, not the state of one run.
        self._stored_files: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _checked=False)
        return state

    # --- the bucket -----------------------------------------------------------------------------

    def _connect(self) -> Bucket:
        """A client for the bucket (no request yet)."""
        raise NotImplementedError

    @property
    def store(self) -> Bucket:
        """The bucket client, created on first use (and again after unpickling)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _ready(self) -> Bucket:
        if not self._checked:
            self.store.check()
            self._checked = True
        return self.store

    # --- events -------------------------------------------------------------------------------

    def queued_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        queue_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        self._ready()
        run_entry = {
            "experiment": self._store_sources(ex_info),
            "command": command,
            "host": host_info,
            "meta": {**meta_info, "queue_time": isoformat(queue_time)},
            "status": "QUEUED",
        }
        return self._start(_id, run_entry, config, queued=False)

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        self._ready()
        run_entry: dict[str, Any] = {
            "experiment": self._store_sources(ex_info),
            "command": command,
            "host": host_info,
            "start_time": isoformat(start_time),
            "meta": meta_info,
            "status": "RUNNING",
            "resources": [],
            "artifacts": [],
            "heartbeat": None,
        }
        run_id = self._start(_id, run_entry, config, queued=self._is_queued(_id))
        self.store.put(f"{self._dir}/cout.txt", b"", "text/plain; charset=utf-8")
        return run_id

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        self.info = dict(info)
        if info:
            self._put_json("info.json", info)
        self._output.update(captured_out, output_delta)
        self.run_entry["heartbeat"] = isoformat(beat_time)
        self.run_entry["result"] = result
        self._put_json("run.json", self.run_entry)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        self._metrics.append(metrics_by_name)  # raising, it keeps none of them: a retry is safe

    def resource_event(self, filename: str) -> None:
        key = self._store_content_addressed(filename, self.resource_dir)
        entry = [filename, key]
        if entry not in self.run_entry.setdefault("resources", []):
            self.run_entry["resources"].append(entry)
            self._put_json("run.json", self.run_entry)

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        key = self._artifact_key(name)
        kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        self.store.upload_file(key, filename, kind)
        if name not in self.run_entry.setdefault("artifacts", []):
            self.run_entry["artifacts"].append(name)
        self._put_json("run.json", self.run_entry)

    def reattach(self, _id: Any) -> bool:
        if _id is None:  # a run no storage observer gave an id is not in this one
            return False
        run_key = join_key(self.basedir, _single_component(_id))
        data = self.store.get(f"{run_key}/run.json")
        try:
            run_entry = json.loads(data) if data else None
        except ValueError:
            return False
        if not isinstance(run_entry, dict) or run_entry.get("status") in _FINISHED:
            return False
        self._begin(run_key)
        self.run_entry = run_entry
        self.config = self._get_json("config.json")
        self.info = self._get_json("info.json")
        # Only the final event follows: merge what the dead process left behind then.
        self._output.adopt_parts()
        journal = list(self.store.listing(self._metrics.journal + "/")[0])
        self._metrics.restore(read_metrics(self.store, run_key), journal)
        return True

    def run_location(self) -> str | None:
        return f"{self.scheme}://{join_key(self.bucket, self.dir)}" if self.dir else None

    @property
    def cout(self) -> str:
        """The run's captured output as stored (Sacred's attribute)."""
        return self._output.read() if self.dir else ""

    # --- the run's keys -------------------------------------------------------------------------

    @property
    def _dir(self) -> str:
        if self.dir is None:
            raise RuntimeError(f"{type(self).__name__} received an event before the run started")
        return self.dir

    def _begin(self, run_key: str) -> None:
        """Reset the per-run state (an instance may record many runs, one after the other)."""
        self.dir = run_key
        self.run_entry, self.config, self.info = {}, {}, {}
        self._output = OutputObject(self.store, f"{run_key}/cout.txt")
        self._metrics = MetricsObject(self.store, run_key)

    def _start(self, _id: Any, run_entry: dict[str, Any], config: dict[str, Any], queued: bool) -> Any:
        """Claim the run's id by creating its run.json; write config.json."""
        data = _json_bytes(run_entry)
        if _id is not None:
            run_key = join_key(self.basedir, _single_component(_id))
            if queued:
                self.store.put(f"{run_key}/run.json", data, _JSON)
            elif not self._create_claimed(f"{run_key}/run.json", data):
                raise FileExistsError(f"a run with id {_id!r} already exists in {self._where()}")
            run_id = _id
        else:
            run_key, run_id = self._claim_number(data)
        self._begin(run_key)
        self.run_entry, self.config = run_entry, config
        self._put_json("config.json", config)
        return run_id

    def _claim_number(self, data: bytes) -> tuple[str, str]:
        _, prefixes = self.store.listing(join_key(self.basedir) + "/" if self.basedir else "", "/")
        numbers = [
            int(name) for name in (p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes) if name.isdigit()
        ]
        candidate = max(numbers, default=0) + 1
        # The create is atomic: a process that loses the race for a number takes the next one.
        for _ in range(1000):
            run_key = join_key(self.basedir, str(candidate))
            if self._create_claimed(f"{run_key}/run.json", data):
                return run_key, str(candidate)
            candidate += 1
        raise FileExistsError(f"could not claim a run id in {self._where()}")

    def _create_claimed(self, key: str, data: bytes) -> bool:
        """Create ``key`` if absent. A create the client retried after a lost reply finds the
        object there already: the claim token it carries says whether it is this one's."""
        claim = uuid.uuid4().hex
        return self.store.create(key, data, _JSON, claim=claim) or self.store.claim_of(key) == claim

    def _is_queued(self, _id: Any) -> bool:
        if _id is None:
            return False
        data = self.store.get(f"{join_key(self.basedir, _single_component(_id))}/run.json")
        try:
            return bool(data) and json.loads(data or b"{}").get("status") == "QUEUED"
        except ValueError:
            return False

    def _artifact_key(self, name: str) -> str:
        check_artifact_name(name)
        relative = posixpath.normpath(name.replace("\\", "/"))
        if relative in {".", ""} or relative.startswith("../"):
            raise InvalidArtifactName(f"artifact name {name!r} escapes the run {self._where(self.dir)}")
        if (
            relative in _OWN_FILES
            or relative.startswith(_OWN_DIRECTORIES)
            or relative + "/" in _OWN_DIRECTORIES
        ):
            raise InvalidArtifactName(
                f"artifact name {name!r} would overwrite the observer's own file {relative}"
            )
        return f"{self._dir}/{relative}"

    def _where(self, key: str | None = None) -> str:
        return f"{self.scheme}://{join_key(self.bucket, key if key is not None else self.basedir)}"

    # --- writing ------------------------------------------------------------------------------

    def _put_json(self, filename: str, obj: Any) -> None:
        self.store.put(f"{self._dir}/{filename}", _json_bytes(obj), _JSON)

    def _get_json(self, filename: str) -> dict[str, Any]:
        data = self.store.get(f"{self._dir}/{filename}")
        try:
            loaded = json.loads(data) if data else {}
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _finish(self) -> None:
        # Whole files first, so a reader who sees the final status finds them complete; the
        # status is written even when that fails (the parts still hold everything then).
        try:
            self._metrics.finish()
            self._output.finish()
        finally:
            self._put_json("run.json", self.run_entry)

    def _store_sources(self, ex_info: dict[str, Any]) -> dict[str, Any]:
        ex_info = dict(ex_info)
        sources = []
        for relpath, md5 in ex_info.get("sources", []):
            path = os.path.join(ex_info.get("base_dir", ""), relpath)
            key = self._store_content_addressed(path, self.source_dir, md5)
            sources.append([relpath, relative_key(key, self.basedir)])
        ex_info["sources"] = sources
        return ex_info

    def _store_content_addressed(self, filename: str, prefix: str, md5: str | None = None) -> str:
        md5 = md5 or md5_of_file(filename)
        stem, ext = os.path.splitext(os.path.basename(filename))
        key = join_key(prefix, f"{stem}_{md5}{ext}")
        if key not in self._stored_files:
            kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            self.store.create_file(key, filename, kind)  # False: stored by an earlier run
            self._stored_files.add(key)
        return key


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(flatten(obj), sort_keys=True, indent=2).encode()


def _single_component(_id: Any) -> str:
    """A run id as one key component; ids that would leave ``basedir`` are refused."""
    text = str(_id)
    if not text or text in {".", ".."} or "/" in text or "\\" in text or "\0" in text:
        raise ValueError(f"run id {_id!r} cannot be a key component")
    return text
