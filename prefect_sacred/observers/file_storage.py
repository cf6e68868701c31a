"""FileStorageObserver: Sacred's directory layout, written crash-safely.

``BASEDIR/<id>/{config.json, run.json, cout.txt, info.json, metrics.json, <artifacts>}`` and
``BASEDIR/_sources``, ``BASEDIR/_resources`` holding ``<stem>_<md5><ext>``, exactly as Sacred
writes them, with these differences:

* every file is replaced atomically (write a temporary file, then rename), never truncated;
* run ids are claimed with ``mkdir``, so concurrent processes never share an id;
* captured output is appended to ``cout.txt``: a beat writes what the run's
  :class:`~prefect_sacred.observers.base.OutputDelta` adds to the characters stored, and the
  whole output only when the delta does not continue them (a filter rewrote earlier output, a
  write failed) or there is none (a caller that sends whole strings, like Sacred's tests);
* metrics are appended to ``metrics.journal``
  (:class:`~prefect_sacred.observers.metrics_log.MetricsLog`) on every beat; a
  ``log_metrics`` that returned has its points in it, one that raised stored none.
  ``metrics.json`` is rewritten on :class:`~prefect_sacred.observers.files.RewriteSchedule`'s
  terms: while that is cheap, beyond that only once the history grew by a quarter since the
  last rewrite. A rewrite encodes only the new points and copies the others from the file
  (:class:`~prefect_sacred.observers.metrics_log.MetricsJsonFile`), byte-identical to
  ``json.dumps(metrics, sort_keys=True, indent=2)``, so the amortised cost of a beat is
  proportional to what is new and the observer keeps no point in memory once written. At the
  end of the run ``metrics.json`` is complete and the journal is removed;
* artifact names that escape the run directory or would overwrite the observer's files are
  refused with :class:`InvalidArtifactName`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from prefect_sacred.observers.base import InvalidArtifactName, OutputDelta
from prefect_sacred.observers.files import OutputFile, RewriteSchedule, copy_atomic, read_text, write_atomic
from prefect_sacred.observers.metrics_log import MetricsJsonFile, MetricsLog, StaleMetricsFile
from prefect_sacred.observers.registry import (
    ObserverConfigError,
    register_observer_option,
    register_url_scheme,
)
from prefect_sacred.observers.run_entry import RunEntryObserver
from prefect_sacred.serialization import flatten, isoformat
from prefect_sacred.utils import md5_of_file

__all__ = ["FileStorageObserver"]

logger = logging.getLogger("prefect_sacred")

METRICS_JOURNAL = "metrics.journal"
_OWN_FILES = {"run.json", "config.json", "cout.txt", "info.json", "metrics.json", METRICS_JOURNAL}
_FINISHED = {"COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT"}


class FileStorageObserver(RunEntryObserver):
    """Stores each run in its own numbered directory below ``basedir``.

    Args:
        basedir: The directory holding one sub-directory per run (created at the first run).
        resource_dir: Where resources are stored (default ``basedir/_resources``).
        source_dir: Where sources are stored (default ``basedir/_sources``).
        template: A mako template rendered into ``report<ext>`` in the run directory at the end
            of each run (default ``basedir/template.html`` if that file exists).
        priority: Observers are called in descending priority; the first id returned wins.
        copy_artifacts: Copy artifacts into the run directory (otherwise only record names).
            As in Sacred, when it is off a resource inside ``basedir`` is not copied either: it
            is recorded as ``[filename, filename]``.
        copy_sources: Copy sources into ``source_dir`` (otherwise record their paths).
    """

    VERSION = "FileStorageObserver-0.7.0"
    # Per run (see _begin): metrics.json, the metrics journal, the output file, how many
    # points there are and when metrics.json is rewritten.
    _metrics: MetricsJsonFile
    _journal: MetricsLog
    _output: OutputFile
    _points: int
    _schedule: RewriteSchedule

    def __init__(
        self,
        basedir: str | os.PathLike[str],
        resource_dir: str | os.PathLike[str] | None = None,
        source_dir: str | os.PathLike[str] | None = None,
        template: str | os.PathLike[str] | None = None,
        priority: int = 20,
        copy_artifacts: bool = True,
        copy_sources: bool = True,
    ) -> None:
        self.basedir = str(basedir)
        self.resource_dir = str(resource_dir or os.path.join(self.basedir, "_resources"))
        self.source_dir = str(source_dir or os.path.join(self.basedir, "_sources"))
        self.template = str(template) if template is not None else None
        self.priority = priority
        self.copy_artifacts = copy_artifacts
        self.copy_sources = copy_sources
        self.dir: str | None = None
        self.run_entry: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.info: dict[str, Any] = {}

    @classmethod
    def create(cls, basedir: str | os.PathLike[str], **kwargs: Any) -> FileStorageObserver:
        """Sacred's deprecated alternative constructor (warns as Sacred's does)."""
        warnings.warn(
            "FileStorageObserver.create(...) is deprecated. Please use FileStorageObserver(...) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(basedir, **kwargs)

    def __eq__(self, other: object) -> bool:
        """Sacred's equality: observers writing into the same ``basedir`` are equal."""
        return isinstance(other, FileStorageObserver) and self.basedir == other.basedir

    def __hash__(self) -> int:
        return hash(self.basedir)

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
        self._begin(self._make_run_dir(_id))
        self.run_entry = {
            "experiment": self._store_sources(ex_info),
            "command": command,
            "host": host_info,
            "meta": {**meta_info, "queue_time": isoformat(queue_time)},
            "status": "QUEUED",
        }
        self.config = config
        self._write_json("config.json", config)
        self._write_json("run.json", self.run_entry)
        return _id if _id is not None else os.path.basename(self._dir)

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
        queued = self._queued_dir(_id)
        self._begin(queued or self._make_run_dir(_id))
        self.run_entry = {
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
        self.config = config
        self._write_json("config.json", config)
        self._write_json("run.json", self.run_entry)
        Path(self._dir, "cout.txt").touch()
        return _id if _id is not None else os.path.basename(self._dir)

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        self.info = dict(info)  # the live dict keeps changing; the report shows this beat's
        if info:
            self._write_json("info.json", info)
        self._output.update(captured_out, output_delta)
        self.run_entry["heartbeat"] = isoformat(beat_time)
        self.run_entry["result"] = result
        self._write_json("run.json", self.run_entry)

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        # Stored once in the journal (an append that raises stored nothing, so a retry of this
        # batch doubles no point); metrics.json follows on the schedule's terms.
        batch = self._journal.append(metrics_by_name)
        self._metrics.add_encoded(batch)
        self._points += sum(points for points, _ in batch.values())
        if self._schedule.is_due(self._points):
            try:
                self._write_metrics_json()
            except OSError as exc:  # the journal has the points; the next rewrite catches up
                logger.warning("could not rewrite %s/metrics.json (%s); retried later", self.dir, exc)

    def resource_event(self, filename: str) -> None:
        if not self.copy_artifacts and _is_below(filename, self.basedir):
            stored = filename  # Sacred's find_or_save: already kept beside the runs, not copied
        else:
            stored = self._store_content_addressed(filename, self.resource_dir)
        entry = [filename, stored]
        if entry not in self.run_entry["resources"]:
            self.run_entry["resources"].append(entry)
            self._write_json("run.json", self.run_entry)

    def artifact_event(
        self,
        name: str,
        filename: str,
        metadata: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> None:
        target = self._artifact_path(name)
        if self.copy_artifacts:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            copy_atomic(filename, target)
        if name not in self.run_entry["artifacts"]:
            self.run_entry["artifacts"].append(name)
        self._write_json("run.json", self.run_entry)

    def reattach(self, _id: Any) -> bool:
        if _id is None:  # a run no storage observer gave an id is not in this one
            return False
        run_dir = os.path.join(self.basedir, _single_component(_id))
        try:
            with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as handle:
                run_entry = json.load(handle)
        except (OSError, ValueError):
            return False
        if run_entry.get("status") in _FINISHED:
            return False
        self._begin(run_dir)
        self.run_entry = run_entry
        self.config = _read_json(os.path.join(run_dir, "config.json"), {})
        self.info = _read_json(os.path.join(run_dir, "info.json"), {})
        # Not read: only the final event follows. Output that comes all the same is written whole.
        self._output.stored = -1
        self._reload_metrics()
        return True

    def run_location(self) -> str | None:
        # Absolute: a run of a deployment or a relative -F is found from any directory.
        return os.path.abspath(self.dir) if self.dir else None

    # --- run directory --------------------------------------------------------------------------

    @property
    def _dir(self) -> str:
        if self.dir is None:
            raise RuntimeError("FileStorageObserver received an event before the run started")
        return self.dir

    def _begin(self, run_dir: str) -> None:
        """Reset the per-run state (an instance may record many runs, one after the other)."""
        self.dir = run_dir
        self.run_entry, self.config, self.info = {}, {}, {}
        self._metrics = MetricsJsonFile(os.path.join(run_dir, "metrics.json"))
        self._journal = MetricsLog(os.path.join(run_dir, METRICS_JOURNAL))
        self._output = OutputFile(os.path.join(run_dir, "cout.txt"))
        self._points = 0
        self._schedule = RewriteSchedule()

    def _make_run_dir(self, _id: Any) -> str:
        os.makedirs(self.basedir, exist_ok=True)
        if _id is not None:
            run_dir = os.path.join(self.basedir, _single_component(_id))
            try:
                os.mkdir(run_dir)
            except FileExistsError:
                raise FileExistsError(f"a run with id {_id!r} already exists in {self.basedir}") from None
            return run_dir
        numbers = [int(entry) for entry in os.listdir(self.basedir) if entry.isdigit()]
        candidate = max(numbers, default=0) + 1
        # mkdir is atomic: a process that loses the race for a number takes the next one.
        for _ in range(1000):
            run_dir = os.path.join(self.basedir, str(candidate))
            try:
                os.mkdir(run_dir)
                return run_dir
            except FileExistsError:
                candidate += 1
        raise FileExistsError(f"could not claim a run directory in {self.basedir}")

    def _queued_dir(self, _id: Any) -> str | None:
        if _id is None:
            return None
        run_dir = os.path.join(self.basedir, _single_component(_id))
        run_entry = _read_json(os.path.join(run_dir, "run.json"), {})
        return run_dir if run_entry.get("status") == "QUEUED" else None

    def _artifact_path(self, name: str) -> str:
        run_dir = os.path.realpath(self._dir)
        target = os.path.realpath(os.path.join(run_dir, name))
        if (
            not name
            or os.path.isabs(name)
            or os.path.commonpath([run_dir, target]) != run_dir
            or target == run_dir
        ):
            raise InvalidArtifactName(f"artifact name {name!r} escapes the run directory {self.dir}")
        relative = os.path.relpath(target, run_dir)
        reserved = set(_OWN_FILES)
        if self._template_path():
            reserved.add("report" + Path(self._template_path() or "").suffix)
        if relative in reserved:
            raise InvalidArtifactName(
                f"artifact name {name!r} would overwrite the observer's own file {relative}"
            )
        return target

    # --- writing ------------------------------------------------------------------------------

    def _write_json(self, filename: str, obj: Any) -> None:
        text = json.dumps(flatten(obj), sort_keys=True, indent=2)
        write_atomic(os.path.join(self._dir, filename), text)

    @property
    def cout(self) -> str:
        """The run's captured output as stored in cout.txt (Sacred's attribute)."""
        return (read_text(os.path.join(self.dir, "cout.txt")) or "") if self.dir else ""

    def _write_metrics_json(self) -> None:
        # Sacred writes metrics.json at the first beat: the schedule's first rewrite is due then.
        with self._schedule.rewriting(self._points):
            try:
                self._metrics.write()
            except StaleMetricsFile:  # changed behind our back: rebuilt from the journal
                self._reload_metrics(joined=True)
                self._metrics.write()

    def _reload_metrics(self, joined: bool = False) -> None:
        """Every point of the run, from the journal (or a complete metrics.json without one).

        With ``joined``, the points of metrics.json the journal lacks come first: a watcher that
        took this live run for dead ended it, writing metrics.json and removing the journal,
        which this process then started anew.
        """
        run_dir = self._dir
        points = self._journal.replay()
        if joined or not points:
            points = _joined(_read_json(os.path.join(run_dir, "metrics.json"), {}), points)
        self._metrics.reset()
        self._metrics.add(points)
        self._points = sum(len(series.get("values", [])) for series in points.values())

    def _finish(self) -> None:
        self._write_json("run.json", self.run_entry)
        self._write_metrics_json()
        self._journal.remove()
        self._render_report()

    def _template_path(self) -> str | None:
        if self.template is not None:
            return self.template
        default = os.path.join(self.basedir, "template.html")
        return default if os.path.exists(default) else None

    def _render_report(self) -> None:
        template = self._template_path()
        if template is None:
            return
        from mako.template import Template

        report = Template(filename=os.path.abspath(template)).render(
            run=self.run_entry, config=self.config, info=self.info, cout=self.cout, savedir=self.dir
        )
        write_atomic(os.path.join(self._dir, "report" + Path(template).suffix), report)

    def _store_sources(self, ex_info: dict[str, Any]) -> dict[str, Any]:
        ex_info = dict(ex_info)
        sources = []
        for relpath, md5 in ex_info.get("sources", []):
            path = os.path.join(ex_info.get("base_dir", ""), relpath)
            if self.copy_sources:
                stored = self._store_content_addressed(path, self.source_dir, md5)
                sources.append([relpath, os.path.relpath(stored, self.basedir)])
            else:
                sources.append([relpath, os.path.abspath(path)])
        ex_info["sources"] = sources
        return ex_info

    @staticmethod
    def _store_content_addressed(filename: str, directory: str, md5: str | None = None) -> str:
        md5 = md5 or md5_of_file(filename)
        stem, ext = os.path.splitext(os.path.basename(filename))
        target = os.path.join(directory, f"{stem}_{md5}{ext}")
        if not os.path.exists(target):
            os.makedirs(directory, exist_ok=True)
            copy_atomic(filename, target)
        return target


def _is_below(filename: str, directory: str) -> bool:
    """Whether ``filename`` is inside ``directory`` (symbolic links resolved, as Sacred does)."""
    return Path(filename).resolve().is_relative_to(Path(directory).resolve())


def _single_component(_id: Any) -> str:
    """A run id as a directory name; ids that would leave ``basedir`` are refused."""
    text = str(_id)
    if not text or text in {".", ".."} or "/" in text or "\\" in text or "\0" in text:
        raise ValueError(f"run id {_id!r} cannot be a directory name")
    return text


def _joined(stored: dict[str, Any], journal: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's points of each metric up to where the journal's begin, then the journal's."""
    joined = dict(stored)
    for name, series in journal.items():
        before = stored.get(name)
        if not isinstance(before, dict) or not series["values"]:
            joined[name] = series
            continue
        first = (series["steps"][0], series["timestamps"][0])
        pairs = zip(before.get("steps", []), before.get("timestamps", []), strict=False)
        cut = next(
            (index for index, pair in enumerate(pairs) if pair == first), len(before.get("values", []))
        )
        joined[name] = {key: list(before.get(key, []))[:cut] + list(series[key]) for key in series}
    return joined


def _read_json(path: str, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


@register_observer_option("-F", "--file_storage", "BASEDIR", "Add a file-storage observer (Sacred's layout).")
def _file_storage_option(value: str) -> FileStorageObserver:
    if not value.strip():
        raise ObserverConfigError("BASEDIR must not be empty")
    return FileStorageObserver(value)


@register_url_scheme("file")
def _file_storage_url(url: str) -> FileStorageObserver:
    """``file://./my_runs`` (relative to the working directory, made absolute) or ``file:///abs/path``."""
    path = url[len("file://") :]
    if not path:
        raise ObserverConfigError("file:// URL without a path")
    # Absolute now: the serve process, its flow-run processes and every log agree on the place.
    return FileStorageObserver(os.path.abspath(path))
