"""TinyDbReader: query runs stored by a TinyDbObserver (ours or Sacred's) and render reports.

Records come back as stored, with sources, resources and artifacts as binary files, as
Sacred's reader gives them (:class:`~prefect_sacred.observers.tinydb.storage.TinyFile`: opened
at the first read, closed by the caller), except that ``fetch_metadata`` gives a run that has not
finished its whole captured output from ``BASEDIR/captured_out/<run id>.txt`` (its record shows
only the last part while it is live; see :mod:`~prefect_sacred.observers.tinydb.observer`).

Example:
    ```python
    reader = TinyDbReader("my_runs")
    print(reader.fetch_report(indices=-1)[0])
    handle = reader.fetch_files(exp_name="mnist")[0]["sources"]["train.py"]
    ```
"""

from __future__ import annotations

import datetime as dt
import os
import re
import textwrap
from typing import Any

from prefect_sacred.observers.files import read_text
from prefect_sacred.observers.metrics_log import replay
from prefect_sacred.observers.tinydb.observer import TinyDbObserver
from prefect_sacred.observers.tinydb.storage import FINISHED, TinyFile, open_db_and_fs

__all__ = ["TinyDbReader"]

_REPORT = """
-------------------------------------------------
Experiment: {exp_name}
-------------------------------------------------
ID: {exp_id}
Date: {start_date}    Duration: {duration}

Parameters:
{parameters}

Result:
{result}

Dependencies:
{dependencies}

Resources:
{resources}

Source Files:
{sources}

Outputs:
{artifacts}
"""
_NONE = "    None"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class TinyDbReader:
    """Reads the runs below ``path`` (a TinyDbObserver directory).

    Every ``fetch_*`` method selects runs by exactly one of: ``indices`` (an int or a list of
    ints, positions in the order the runs were created, negative from the end), ``exp_name``
    (a substring or regular expression searched in the experiment's name) or ``query`` (a TinyDB
    query such as ``Query().config.lr > 0.1``).

    Args:
        path: The observer's directory (holding ``metadata.json`` and ``hashfs/``).

    Raises:
        OSError: ``path`` does not exist.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(path)
        if not os.path.exists(self.root):
            raise OSError(f"Path does not exist: {path}")
        self.db, self.fs = open_db_and_fs(self.root, files=True)
        self.runs = self.db.table("runs")

    def search(self, *args: Any, **kwargs: Any) -> list[Any]:
        """TinyDB's ``search`` on the ``runs`` table, records as stored, as Sacred's: files are
        binary files (``record["artifacts"][0][3].read()``; closing them is the caller's) and a
        live run's ``captured_out`` is what its record shows (the last part)."""
        self.runs.clear_cache()
        return list(self.runs.search(*args, **kwargs))

    def fetch_metadata(
        self, exp_name: str | None = None, query: Any = None, indices: int | list[int] | None = None
    ) -> list[dict[str, Any]]:
        """The stored records of the selected runs, with dates as datetimes and files as binary
        files (None for a file missing from ``hashfs/``).

        A run that has not finished has its whole captured output, not only what its record
        shows while it is live.

        Raises:
            ValueError: no selection was given, or an index is out of range.
        """
        return [
            self._without_missing_files(self._with_whole_output(record))
            for record in self._select(exp_name, query, indices)
        ]

    def fetch_files(
        self, exp_name: str | None = None, query: Any = None, indices: int | list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Per selected run: ``exp_name``, ``exp_id``, ``date`` (start time) and, when not
        empty, ``sources``/``resources``/``artifacts`` as ``{name: open binary handle}``."""
        found = []
        for record in self.fetch_metadata(exp_name, query, indices):
            entry: dict[str, Any] = {
                "exp_name": record["experiment"]["name"],
                "exp_id": record["_id"],
                "date": record.get("start_time"),
            }
            files = {
                "sources": {item[0]: item[2] for item in record["experiment"].get("sources", [])},
                "resources": {item[0]: item[2] for item in record.get("resources", [])},
                "artifacts": {item[0]: item[3] for item in record.get("artifacts", [])},
            }
            entry.update({key: value for key, value in files.items() if value})
            found.append(entry)
        return found

    def fetch_report(
        self, exp_name: str | None = None, query: Any = None, indices: int | list[int] | None = None
    ) -> list[str]:
        """A text summary per selected run, in Sacred's format: name, id, date and duration,
        then Parameters, Result, Dependencies, Resources, Source Files and Outputs."""
        return [_report(record) for record in self._select(exp_name, query, indices)]

    def fetch_metrics(
        self, exp_name: str | None = None, query: Any = None, indices: int | list[int] | None = None
    ) -> list[dict[str, dict[str, list[Any]]]]:
        """Per selected run ``{name: {"steps", "values", "timestamps"}}`` (datetimes)."""
        found = []
        for record in self._select(exp_name, query, indices):
            metrics = replay(TinyDbObserver.metrics_path(self.root, record["_id"]))
            for series in metrics.values():
                series["timestamps"] = [
                    dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
                    for stamp in series["timestamps"]
                ]
            found.append(metrics)
        return found

    def _with_whole_output(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with the output of its file while the run is unfinished (as stored if
        the file is missing: no output yet, or a run Sacred's observer wrote)."""
        if record.get("status") in FINISHED or "_id" not in record:
            return record
        whole = read_text(TinyDbObserver.captured_out_path(self.root, record["_id"]))
        return record if whole is None else {**record, "captured_out": whole}

    # --- selection ------------------------------------------------------------------------------

    def _select(
        self, exp_name: str | None, query: Any, indices: int | list[int] | None
    ) -> list[dict[str, Any]]:
        self.runs.clear_cache()
        if query is not None:
            return [dict(record) for record in self.runs.search(query)]
        if exp_name:
            pattern = re.compile(exp_name)
            return [
                dict(record)
                for record in self.runs.all()
                if pattern.search(str(record.get("experiment", {}).get("name", "")))
            ]
        if indices is not None and not isinstance(indices, bool):
            records = self.runs.all()
            chosen = []
            for index in [indices] if isinstance(indices, int) else list(indices):
                if not -len(records) <= index < len(records):
                    raise ValueError(f"Index value ({index}) out of range for {len(records)} records")
                chosen.append(dict(records[index]))
            return chosen
        raise ValueError("Must specify an experiment name, indices or pass custom query")

    def _without_missing_files(self, value: Any) -> Any:
        """``value`` with files missing from ``hashfs/`` replaced by None."""
        if isinstance(value, TinyFile):
            return value if value.exists() else None
        if isinstance(value, dict):
            return {key: self._without_missing_files(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._without_missing_files(item) for item in value]
        return value


def _report(record: dict[str, Any]) -> str:
    start = record.get("start_time")
    stop = record.get("stop_time")
    date = f"{_WEEKDAYS[start.weekday()]} {start.strftime('%d %b %Y')}" if start else "None"
    if start and stop:
        hours, remainder = divmod((stop - start).total_seconds(), 3600)
        minutes, seconds = divmod(remainder, 60)
        duration = f"{int(hours):02d}:{int(minutes):02d}:{seconds:04.1f}"
    else:  # queued or still running
        duration = "None"
    experiment = record.get("experiment", {})
    config = record.get("config") or {}
    parameters = _indent("\n".join(f"{key}: {config[key]}" for key in sorted(config)).strip())
    sections = {
        "parameters": parameters,
        "result": _indent(repr(record.get("result"))),
        "dependencies": _indent("\n".join(experiment.get("dependencies", []))),
        "resources": _indent("\n".join(item[0] for item in record.get("resources", []))),
        "sources": _indent("\n".join(item[0] for item in experiment.get("sources", []))),
        "artifacts": _indent("\n".join(item[0] for item in record.get("artifacts", []))),
    }
    return _REPORT.format(
        exp_name=experiment.get("name"),
        exp_id=record.get("_id"),
        start_date=date,
        duration=duration,
        **{key: value if value else _NONE for key, value in sections.items()},
    )


def _indent(text: str, prefix: str = "    ") -> str:
    """Indent each line by ``prefix`` and wrap it at 150 columns, as Sacred's report does."""
    wrapper = textwrap.TextWrapper(initial_indent=prefix, width=150, subsequent_indent=prefix)
    return "\n".join(wrapper.fill(line) for line in text.splitlines())
