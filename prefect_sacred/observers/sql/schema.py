"""The SQL tables of :class:`~prefect_sacred.observers.sql.SqlObserver`: Sacred's, plus additions.

Sacred's tables and column names are kept so that Sacred's own models
(``sacred.observers.sql_bases``) read our databases. What differs, and why:

* String lengths are wider (``dependency.name`` 32 -> 255, ``experiment.base_dir`` 64 -> 1024,
  ...): PostgreSQL and MariaDB refuse longer values, and real dependency names and paths exceed
  Sacred's. The types are the same, so readers do not notice.
* On MySQL/MariaDB, text and blobs are ``LONGTEXT``/``LONGBLOB`` (``TEXT`` stops at 64 KB),
  timestamps keep microseconds and floats are double precision.
* ``run.run_id`` and the columns referring to it are ``VARCHAR(64)`` (Sacred: 24).
* Extra columns on ``run``: ``result_json`` (any result, encoded like config; Sacred's ``result``
  column is a float and only holds numbers), ``meta_json`` (the whole meta info; Sacred keeps
  only comment and priority), ``fail_trace_json`` (the trace as its list of lines),
  ``status_detail`` (a custom interrupt status that the status enum cannot hold).
* Extra tables: ``metric`` (one row per point, indexed on ``(run_id, name, step)``; Sacred drops
  metrics) and ``run_output`` (captured output after ``run.captured_out``, in ``seq`` order:
  a live run's beyond its first 64 KB, a finished run's beyond what one MySQL/MariaDB packet
  can carry; see :mod:`~prefect_sacred.observers.sql.output`).
  A step that is not a whole number is kept in ``metric.step_exact``, with its floor in ``step``;
  readers take ``step_exact`` when it is not NULL.

:func:`~prefect_sacred.observers.sql.upgrade.create_tables` creates what is missing, and several
processes may call it at once. A database that Sacred 0.8.7's ``SqlObserver`` created is upgraded
in place (see :mod:`~prefect_sacred.observers.sql.upgrade`): its runs stay, and Sacred's models
still read it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = [
    "FINISHED_STATUSES",
    "MYSQL",
    "STATUSES",
    "artifact",
    "dependency",
    "experiment",
    "experiments_dependencies",
    "experiments_repositories",
    "experiments_sources",
    "host",
    "metadata",
    "metric",
    "repository",
    "resource",
    "run",
    "run_output",
    "runs_resources",
    "source",
]

#: Sacred's ``status_enum`` (QUEUED was added after Sacred 0.8.7).
STATUSES = ("RUNNING", "COMPLETED", "INTERRUPTED", "TIMEOUT", "FAILED", "QUEUED")
FINISHED_STATUSES = frozenset({"COMPLETED", "INTERRUPTED", "TIMEOUT", "FAILED"})
RUN_ID = 64

#: The dialect names of MySQL and MariaDB, which need their own types and statement sizes.
MYSQL = ("mysql", "mariadb")


def _text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), *MYSQL)


def _blob() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)


def _datetime() -> sa.types.TypeEngine[dt.datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)


# asdecimal=False: SQLAlchemy reads MySQL's DOUBLE as Decimal otherwise, our other dialects as float.
def _float() -> sa.types.TypeEngine[float]:
    return sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL)


def _double() -> sa.types.TypeEngine[float]:
    return sa.Double().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL)


metadata = sa.MetaData()

source = sa.Table(
    "source",
    metadata,
    sa.Column("source_id", sa.Integer, primary_key=True),
    sa.Column("filename", sa.String(1024)),
    sa.Column("md5sum", sa.String(32)),
    sa.Column("content", _text()),
)

repository = sa.Table(
    "repository",
    metadata,
    sa.Column("repository_id", sa.Integer, primary_key=True),
    sa.Column("url", sa.String(2048)),
    sa.Column("commit", sa.String(40)),
    sa.Column("dirty", sa.Boolean),
)

dependency = sa.Table(
    "dependency",
    metadata,
    sa.Column("dependency_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("version", sa.String(128)),
)

host = sa.Table(
    "host",
    metadata,
    sa.Column("host_id", sa.Integer, primary_key=True),
    sa.Column("cpu", sa.String(255)),
    sa.Column("hostname", sa.String(255)),
    sa.Column("os", sa.String(64)),
    sa.Column("os_info", sa.String(255)),
    sa.Column("python_version", sa.String(64)),
)

experiment = sa.Table(
    "experiment",
    metadata,
    sa.Column("experiment_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("md5sum", sa.String(32)),
    sa.Column("base_dir", sa.String(1024)),
)

experiments_sources = sa.Table(
    "experiments_sources",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiment.experiment_id")),
    sa.Column("source_id", sa.Integer, sa.ForeignKey("source.source_id")),
)

experiments_repositories = sa.Table(
    "experiments_repositories",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiment.experiment_id")),
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repository.repository_id")),
)

experiments_dependencies = sa.Table(
    "experiments_dependencies",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiment.experiment_id")),
    sa.Column("dependency_id", sa.Integer, sa.ForeignKey("dependency.dependency_id")),
)

run = sa.Table(
    "run",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(RUN_ID), unique=True),
    sa.Column("command", sa.String(255)),
    sa.Column("start_time", _datetime()),
    sa.Column("heartbeat", _datetime()),
    sa.Column("stop_time", _datetime()),
    sa.Column("queue_time", _datetime()),
    sa.Column("priority", _float()),
    sa.Column("comment", _text()),
    sa.Column("fail_trace", _text()),
    sa.Column("captured_out", _text()),
    sa.Column("config", _text()),
    sa.Column("info", _text()),
    sa.Column("status", sa.Enum(*STATUSES, name="status_enum")),
    sa.Column("host_id", sa.Integer, sa.ForeignKey("host.host_id")),
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiment.experiment_id")),
    sa.Column("result", _float()),
    # --- additions (see the module docstring) ---
    sa.Column("result_json", _text()),
    sa.Column("meta_json", _text()),
    sa.Column("fail_trace_json", _text()),
    sa.Column("status_detail", sa.String(64)),
)

artifact = sa.Table(
    "artifact",
    metadata,
    sa.Column("artifact_id", sa.Integer, primary_key=True),
    sa.Column("filename", sa.String(255)),
    sa.Column("content", _blob()),
    sa.Column("run_id", sa.String(RUN_ID), sa.ForeignKey("run.run_id")),
)

resource = sa.Table(
    "resource",
    metadata,
    sa.Column("resource_id", sa.Integer, primary_key=True),
    sa.Column("filename", sa.String(1024)),
    sa.Column("md5sum", sa.String(32)),
    sa.Column("content", _blob()),
)

runs_resources = sa.Table(
    "runs_resources",
    metadata,
    sa.Column("run_id", sa.String(RUN_ID), sa.ForeignKey("run.run_id")),
    sa.Column("resource_id", sa.Integer, sa.ForeignKey("resource.resource_id")),
)

metric = sa.Table(
    "metric",
    metadata,
    sa.Column("metric_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("run_id", sa.String(RUN_ID), sa.ForeignKey("run.run_id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    # Only for a step that is not a whole number (``step`` then holds its floor, for the index).
    sa.Column("step_exact", _double()),
    # NaN and infinities are stored as NULL: MariaDB and SQLite cannot store them.
    sa.Column("value", _double()),
    sa.Column("timestamp", _datetime()),
    sa.Index("ix_metric_run_name_step", "run_id", "name", "step"),
)

run_output = sa.Table(
    "run_output",
    metadata,
    sa.Column("run_id", sa.String(RUN_ID), sa.ForeignKey("run.run_id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("chunk", _text()),
)
