"""The rows that runs share, found or created: host, experiment (with its sources, dependencies
and repositories) and resources.

Sacred looks each one up by its content before inserting it, so that a thousand runs of one
experiment on one machine refer to one ``host`` and one ``experiment`` row; this keeps that.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import sqlalchemy as sa

from prefect_sacred.observers.sql import schema as t

__all__ = ["experiment_id", "host_id", "link_resource"]


def host_id(conn: Any, host_info: dict[str, Any]) -> int:
    os_name, os_info = [*list(host_info.get("os") or []), "", ""][:2]
    values = {
        "hostname": str(host_info.get("hostname", ""))[:255],
        "cpu": str(host_info.get("cpu", ""))[:255],
        "os": str(os_name)[:64],
        "os_info": str(os_info)[:255],
        "python_version": str(host_info.get("python_version", ""))[:64],
    }
    return _get_or_insert(conn, t.host, "host_id", values)


def experiment_id(conn: Any, ex_info: dict[str, Any]) -> int:
    name = str(ex_info.get("name", ""))[:255]
    md5 = hashlib.md5(json.dumps(ex_info, default=str).encode()).hexdigest()
    match = {"name": name, "md5sum": md5}
    found = _find(conn, t.experiment, "experiment_id", match)
    if found is not None:
        return found
    base_dir = str(ex_info.get("base_dir", ""))
    new_id = _insert(conn, t.experiment, {**match, "base_dir": base_dir[:1024]})
    for relpath, md5sum in ex_info.get("sources", []):
        path = os.path.join(base_dir, relpath)
        source_id = _get_or_insert(
            conn,
            t.source,
            "source_id",
            {"filename": relpath, "md5sum": md5sum},
            partial(_source_content, path),
        )
        conn.execute(t.experiments_sources.insert().values(experiment_id=new_id, source_id=source_id))
    for requirement in ex_info.get("dependencies", []):
        dep_name, _, version = str(requirement).partition("==")
        dependency_id = _get_or_insert(
            conn, t.dependency, "dependency_id", {"name": dep_name[:255], "version": version[:128]}
        )
        conn.execute(
            t.experiments_dependencies.insert().values(experiment_id=new_id, dependency_id=dependency_id)
        )
    for repo in ex_info.get("repositories", []):
        repository_id = _get_or_insert(
            conn,
            t.repository,
            "repository_id",
            {
                "url": str(repo.get("url"))[:2048],
                "commit": str(repo.get("commit"))[:40],
                "dirty": bool(repo.get("dirty")),
            },
        )
        conn.execute(
            t.experiments_repositories.insert().values(experiment_id=new_id, repository_id=repository_id)
        )
    return new_id


def link_resource(conn: Any, run_key: str, filename: str, md5sum: str) -> None:
    """Store ``filename`` once per content and link it to the run once.

    The caller hashes the file before its transaction: on SQLite the transaction holds the
    database's write lock, which other runs' heartbeats are waiting for.
    """
    resource_id = _get_or_insert(
        conn,
        t.resource,
        "resource_id",
        {"filename": filename, "md5sum": md5sum},
        partial(_file_content, filename),
    )
    link = {"run_id": run_key, "resource_id": resource_id}
    if _find(conn, t.runs_resources, "resource_id", link) is None:
        conn.execute(t.runs_resources.insert().values(**link))


def _source_content(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return {"content": handle.read()}
    except OSError:  # the source moved since the run started: keep its name and digest
        return {"content": None}


def _file_content(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return {"content": handle.read()}


def _find(conn: Any, table: Any, key: str, match: dict[str, Any]) -> int | None:
    found = conn.execute(
        sa.select(table.c[key]).where(*(table.c[name] == value for name, value in match.items())).limit(1)
    ).scalar()
    return None if found is None else int(found)


def _insert(conn: Any, table: Any, values: dict[str, Any]) -> int:
    return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])


def _get_or_insert(
    conn: Any,
    table: Any,
    key: str,
    match: dict[str, Any],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> int:
    """The ``key`` of the row matching ``match``, or of a new one with ``extra()`` added: file
    contents are read only when the row is new."""
    found = _find(conn, table, key, match)
    if found is not None:
        return found
    return _insert(conn, table, {**match, **(extra() if extra else {})})
