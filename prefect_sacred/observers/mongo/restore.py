"""Putting the runs MongoDB could not take back into it: ``prefect-sacred sync --mongo-dumps``.

When the final write of a run fails for good, the MongoObserver saves the run to a file
(:func:`~prefect_sacred.observers.mongo.failures.write_failure_file`). A run with a journal
keeps it there and journal sync delivers the run's events; without one (``PREFECT_SACRED_JOURNAL=0``,
an explicit ``failure_dir``) the file is all there is. :func:`restore_dump` writes such a file
back the way the observer would have, through the observer's own writers:

* the files not uploaded yet: resources once by md5, artifacts as ``artifact://`` files
  (:class:`~prefect_sacred.observers.mongo.files.RunFiles`); a copy a failed attempt stored is
  reused, so repeating a restore stores none twice. A file that is gone is reported and the dump
  kept, the rest is restored all the same;
* the metric points not written yet (:class:`~prefect_sacred.observers.mongo.storage.MetricWriter`,
  chunked as the observer chunks), without those a write that raised did store: the dump's
  points of a metric that match, by step and timestamp, the end of the stored series;
* the whole output (the dump holds all of it) as the observer stores it: past 256 K characters
  the document keeps the end and GridFS all of it; ``info``, ``result`` and ``config`` past
  4 MiB go to GridFS;
* the runs document last, all its fields ``$set`` with an upsert, as the observer's final write
  does: the dump is the newest state of the run, and fields other tools added survive.

A restored dump is renamed ``<name>.restored``: a second sync finds nothing, nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.observers.delivery import describe_error
from prefect_sacred.observers.mongo.connect import (
    check_reachable,
    collection_names,
    make_client,
    server_address,
)
from prefect_sacred.observers.mongo.failures import DEFAULT_FAILURE_DIR
from prefect_sacred.observers.mongo.files import RunFiles
from prefect_sacred.observers.mongo.options import parse_mongo_db_arg
from prefect_sacred.observers.mongo.output import CapturedOutput
from prefect_sacred.observers.mongo.storage import MetricWriter, md5_hex, read_metric, with_metric_refs
from prefect_sacred.observers.registry import OBSERVERS_ENV_VAR, ObserverConfigError
from prefect_sacred.utils import md5_of_file, redact, without_leading_points

__all__ = ["DUMP_PATTERN", "DumpReport", "find_dumps", "mongo_target", "restore_dump", "restore_dumps"]

DUMP_PATTERN = "sacred_mongo_fail_*.json"
RESTORED_SUFFIX = ".restored"
# The MongoObserver's defaults: a dump does not say what its observer was given.
CAPTURED_OUT_LIMIT = 256 * 1024
VALUE_LIMIT = 4 * 1024 * 1024
_MONGO_URL = re.compile(r"^mongodb(?:\+srv)?://", re.IGNORECASE)


@dataclass
class DumpReport:
    """What restoring one dump did."""

    path: str
    run_id: Any = None
    #: ``database.runs_collection`` the run belongs to.
    target: str = ""
    #: Metric points added, and those already stored (a write that raised had stored them).
    added_points: int = 0
    known_points: int = 0
    uploaded_files: int = 0
    #: Files of the run that no longer exist (the dump is kept).
    missing: list[str] = field(default_factory=list)
    #: Why the run was not restored (credentials hidden); None when it was.
    error: str | None = None
    #: Where the dump went once restored (None: it stays where it was).
    renamed_to: str | None = None

    @property
    def ok(self) -> bool:
        """Everything the dump holds is in MongoDB."""
        return self.error is None and not self.missing

    def line(self) -> str:
        """The report for people, in one line."""
        if self.error is not None:
            return f"{self.path}: failed: {self.error}"
        text = (
            f"{self.path}: restored run {self.run_id} into {self.target} ({self.added_points} metric "
            f"point(s) added, {self.known_points} already stored, {self.uploaded_files} file(s) uploaded)"
        )
        if self.missing:
            return f"{text}; missing, so the dump is kept: {', '.join(self.missing)}"
        return f"{text}; dump renamed to {self.renamed_to}"


def mongo_target(value: str | None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The MongoDB to restore into: ``value`` in ``-m``'s grammar, else the environment's.

    Args:
        value: As ``-m/--mongo_db`` takes it (``host:port:db``, a ``mongodb://`` URI...).
        environ: Where ``PREFECT_SACRED_OBSERVERS`` is read (default ``os.environ``).

    Returns:
        The MongoObserver arguments ``value`` stands for (:func:`parse_mongo_db_arg`).

    Raises:
        ObserverConfigError: ``value`` is malformed, or, without it, the environment does not
            name exactly one ``mongodb://`` observer.
    """
    if value is not None:
        return parse_mongo_db_arg(value)
    named = (environ if environ is not None else os.environ).get(OBSERVERS_ENV_VAR, "").split()
    found = [url for url in named if _MONGO_URL.match(url)]
    if len(found) != 1:
        raise ObserverConfigError(
            f"{OBSERVERS_ENV_VAR} names {len(found)} MongoDB observers; say which server with -m"
        )
    return parse_mongo_db_arg(found[0])


def find_dumps(paths: Sequence[str]) -> list[str]:
    """The dump files among ``paths``: files as given, directories' ``sacred_mongo_fail_*.json``.

    Without ``paths``, the default failure directory (``~/.prefect_sacred/mongo_failures``).
    """
    found: list[str] = []
    for path in paths or [DEFAULT_FAILURE_DIR]:
        if os.path.isdir(path):
            found += sorted(glob.glob(os.path.join(glob.escape(path), DUMP_PATTERN)))
        elif paths:  # a file, or a path that is not there (its report says so)
            found.append(path)
    return list(dict.fromkeys(found))


def restore_dumps(paths: Sequence[str], target: dict[str, Any]) -> list[DumpReport]:
    """Restore every dump in ``paths`` (see :func:`find_dumps`) into the server of ``target``.

    Args:
        paths: Dump files and directories holding them.
        target: MongoObserver arguments (:func:`mongo_target`); ``url`` names the server (default
            localhost), ``db_name`` and ``collection``, when given, must be the dump's.
    """
    dumps = find_dumps(paths)
    if not dumps:
        return []
    url = target.get("url")
    client = make_client(url, {})
    unreachable: dict[str, str] = {}  # one wait per server that does not answer, not per dump
    try:
        return [restore_dump(path, client, target, unreachable) for path in dumps]
    finally:
        client.close()


def restore_dump(
    path: str, client: Any, target: dict[str, Any] | None = None, unreachable: dict[str, str] | None = None
) -> DumpReport:
    """Write the run saved in the dump ``path`` into MongoDB through ``client``; rename the dump.

    Args:
        path: A file ``write_failure_file`` wrote.
        client: A ``pymongo.MongoClient`` (with the wing's timeouts: :func:`make_client`).
        target: The ``-m`` arguments; a ``db_name`` or ``collection`` other than the dump's
            fails the dump rather than write the run where nobody looks for it.
        unreachable: Servers found unreachable so far (address -> error), filled in here.
    """
    report = DumpReport(path)
    try:
        dump = _load(path)
        run = dump["run"]
        report.run_id = run["_id"]
        report.target = f"{dump['database']}.{dump['runs_collection']}"
        _check_target(dump, target or {})
        address = server_address((target or {}).get("url"), client)
        database = client[dump["database"]]
        if unreachable is not None and address in unreachable:
            raise ConnectionError(unreachable[address])
        try:
            check_reachable(database, address)
        except ConnectionError as exc:
            if unreachable is not None:
                unreachable[address] = str(exc)
            raise
        _restore(dump, database, report)
    except _NotADump as exc:
        report.error = f"not a MongoObserver failure dump ({exc})"
        return report
    except ConnectionError as exc:
        report.error = redact(str(exc))
        return report
    except Exception as exc:
        # pymongo appends the whole topology description: the first part says what failed.
        report.error = describe_error(exc).split(", Topology Description:", 1)[0]
        return report
    if not report.missing:
        try:
            os.replace(path, path + RESTORED_SUFFIX)
        except OSError as exc:
            report.error = f"restored, but the dump could not be renamed: {describe_error(exc)}"
        else:
            report.renamed_to = path + RESTORED_SUFFIX
    return report


class _NotADump(ValueError):
    pass


def _load(path: str) -> dict[str, Any]:
    from bson import json_util

    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    try:
        dump: dict[str, Any] = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise _NotADump(f"unreadable: {str(exc)[:200]}") from None
    run = dump.get("run") if isinstance(dump, dict) else None
    if (
        not isinstance(run, dict)
        or "_id" not in run
        or not dump.get("database")
        or not dump.get("runs_collection")
    ):
        raise _NotADump("no database, runs_collection or run with an _id")
    return dump


def _check_target(dump: dict[str, Any], target: dict[str, Any]) -> None:
    named = target.get("db_name")
    if named is not None and named != dump["database"]:
        raise ValueError(f"the run belongs to database {dump['database']!r}, -m names {named!r}")
    if target.get("collection") is not None:
        runs_name = collection_names(target["collection"], "")[0]
        if runs_name != dump["runs_collection"]:
            raise ValueError(
                f"the run belongs to collection {dump['runs_collection']!r}, -m names {runs_name!r}"
            )


def _restore(dump: dict[str, Any], database: Any, report: DumpReport) -> None:
    import gridfs

    run = dict(dump["run"])
    run_id = run["_id"]
    runs = database[dump["runs_collection"]]
    _check_same_run(runs, run)
    files = RunFiles(database, gridfs.GridFS(database), runs.name, run_id)
    for item in dump.get("pending_files") or []:
        kind, name, filename, metadata, content_type = item
        if not os.path.isfile(filename):
            report.missing.append(filename)
        elif not (kind == "artifact" and _reuse_artifact(database, runs.name, run, name, filename)):
            files.add((kind, name, filename, metadata, content_type))
    report.uploaded_files = len(files.pending)
    _changed, errors = files.upload(run)
    if errors:
        raise errors[0]
    if dump.get("metrics_collection"):
        metrics = database[dump["metrics_collection"]]
        writer = MetricWriter(metrics, database[f"{metrics.name}_chunks"], run_id)
        writer.load_existing()
        _add_points(writer, dump.get("pending_metrics") or {}, report)
        writer.flush()
        run["info"] = with_metric_refs(run.get("info") or {}, writer.refs)
    _write_output(database, runs.name, run)
    for name, keep in (("config", ()), ("result", ()), ("info", ("metrics",))):
        _fit(files, run, name, keep)
    fields = {key: value for key, value in run.items() if key != "_id"}
    runs.update_one({"_id": run_id}, {"$set": fields}, upsert=True)


def _check_same_run(runs: Any, run: dict[str, Any]) -> None:
    """Refuse to write over another run that took the id (a server that lost its data)."""
    stored = runs.find_one({"_id": run["_id"]}, {"start_time": 1})
    started = run.get("start_time")
    if stored and started is not None and stored.get("start_time") not in (None, started, _utc(started)):
        raise FileExistsError(
            f"run {run['_id']!r} in {runs.name} is another run (started {stored['start_time']}, "
            f"the dump's at {started}); restore it by hand"
        )


def _reuse_artifact(database: Any, runs_name: str, run: dict[str, Any], name: str, filename: str) -> bool:
    """Refer to an unreferenced stored copy of the artifact (a failed attempt's), if there is one."""
    import gridfs

    referenced = {artifact.get("file_id") for artifact in run.get("artifacts") or []}
    query = {"filename": f"artifact://{runs_name}/{run['_id']}/{name}", "length": os.path.getsize(filename)}
    candidates = [
        doc["_id"] for doc in database["fs.files"].find(query, {"_id": 1}) if doc["_id"] not in referenced
    ]
    if not candidates:
        return False
    md5 = md5_of_file(filename)
    fs = gridfs.GridFS(database)
    for file_id in candidates:
        if md5_hex(fs.get(file_id).read()) == md5:
            run.setdefault("artifacts", []).append({"name": name, "file_id": file_id})
            return True
    return False


def _add_points(writer: MetricWriter, pending: dict[str, Any], report: DumpReport) -> None:
    """Give ``writer`` the dump's points that the metric documents do not hold yet."""
    known: dict[str, int] = {}
    for name, points in pending.items():
        if name in writer.refs:
            stored = read_metric(writer.metrics, writer.chunks, writer.run_id, name)
            known[name] = _stored_prefix(stored, points)
    batch = without_leading_points(pending, known)
    writer.add(batch)
    report.known_points += sum(known.values())
    report.added_points += sum(len(points["values"]) for points in batch.values())


def _stored_prefix(stored: dict[str, list[Any]], pending: dict[str, list[Any]]) -> int:
    """How many of the first ``pending`` points end the ``stored`` series (by step and timestamp).

    A write of the observer that raised may still have been applied: the points it held are
    then both the end of the stored series and the start of the dump's.
    """
    have = [(step, _utc(time)) for step, time in zip(stored["steps"], stored["timestamps"], strict=False)]
    want = [(step, _utc(time)) for step, time in zip(pending["steps"], pending["timestamps"], strict=False)]
    if not have or not want:
        return 0
    for start in range(max(0, len(have) - len(want)), len(have)):
        if have[start] == want[0] and have[start:] == want[: len(have) - start]:
            return len(have) - start
    return 0


def _utc(value: Any) -> Any:
    """A date as MongoDB stores it (naive UTC), whether the client reads dates tz-aware or not."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _write_output(database: Any, runs_name: str, run: dict[str, Any]) -> None:
    """Store the dump's whole output as the observer does: the end in the document, all in GridFS."""
    output = CapturedOutput(database, runs_name, run["_id"], CAPTURED_OUT_LIMIT)
    if run.get("captured_out_file") is not None:
        output.resume(run)  # complete the file the run began, past the chunks it stored
    else:
        output.update(str(run.get("captured_out") or ""))
    output.write(final=True)
    run.update(output.changed_fields())


def _fit(files: RunFiles, run: dict[str, Any], name: str, keep: tuple[str, ...]) -> None:
    import bson

    if name not in run:
        return
    size = len(bson.encode({"v": run[name]}))
    if size > VALUE_LIMIT:
        run[name] = files.spill(name, run[name], size, keep)
