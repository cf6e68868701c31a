"""No password reaches a record, a log or an error message, whatever it holds.

A matrix of observer URLs (passwords with ``/``, ``#``, ``?``, ``:``, ``@`` and ``%``, escaped or
raw as each library accepts them, ``mongodb+srv://``, several hosts, ``?password=``), each given
on the command line (``-s``/``-m`` through ``ex.run``'s options, beside ``-F``) against a
reachable backend and an unreachable one. Everything the run left is then searched for every
piece of the password: the files FileStorage wrote (``meta.options`` holds the URLs), the SQL
rows and Mongo documents, the run's journal, the logs (caplog), what was printed, the error and
its traceback, and what Prefect keeps (the flow run, its logs and its summary artifact).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from prefect_sacred import Experiment
from prefect_sacred.utils import redact
from tests.backends.sql import MARIADB_ADMIN, PG_ADMIN, drop_database
from tests.support import free_port, port_open, service_missing, subprocess_env

SPECIALS = r"[/#?@:%]"


@dataclass(frozen=True)
class Case:
    """An observer URL: ``{host}`` and ``{db}`` are filled in; ``{pw}`` is the password as written."""

    id: str
    flag: str
    template: str
    written: str  # the password as it appears in the URL
    stores: bool  # a reachable backend takes the run (False: it refuses it, e.g. Mongo auth)

    @property
    def password(self) -> str:
        """The password the server gets (SQLAlchemy and pymongo %-decode it)."""
        return unquote(self.written) if "%" in self.written else self.written

    def url(self, host: str, db: str) -> str:
        return self.template.format(host=host, db=db, pw=self.written)

    def fragments(self) -> set[str]:
        """The password, raw and decoded, and each piece between its special characters."""
        pieces = {self.written, self.password}
        for text in (self.written, self.password):
            pieces.update(piece for piece in re.split(SPECIALS, text) if len(piece) >= 5)
        return pieces


def rot13(text: str) -> str:
    """The passwords are written rot13'd: this file is the experiment's source, stored with each run."""
    return codecs.encode(text, "rot13")


PG = "postgresql+psycopg://postgres:{pw}@{host}/{db}"
FAST = "serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"  # unreachable Mongo: 1.5 s, not 5
MONGO = "mongodb://u:{pw}@{host}/{db}?" + FAST
CASES = [
    Case("pg_slash", "--sql", PG, rot13("Xvjv/Fynfu1k"), True),
    Case("pg_hash", "--sql", PG, rot13("Yvzr#Unfu2k"), True),
    Case("pg_question", "--sql", PG, rot13("Znatb?Dhrfg3k"), True),
    Case("pg_colon", "--sql", PG, rot13("Arpgne:Pbyba4k"), True),
    Case("pg_escaped_at", "--sql", PG, rot13("Byvir%40Rfpncrq5k"), True),
    Case("pg_everything", "--sql", PG, rot13("Cncnln/#?:Rirel6k"), True),
    Case(
        "pg_query_password",
        "--sql",
        "postgresql+psycopg://postgres@{host}/{db}?password={pw}",
        rot13("Dhvapr7k"),
        True,
    ),
    Case(
        "pg_default_driver",
        "--sql",
        "postgresql://postgres:{pw}@{host}/{db}",
        rot13("Envfva#AbQevire8k"),
        True,
    ),
    Case(
        "mysql_mixed",
        "--sql",
        "mysql+pymysql://ps_sec_mixed:{pw}@{host}/{db}",
        rot13("Fhygnan/#?Zvkrq9k"),
        True,
    ),
    Case(
        "mysql_percent",
        "--sql",
        "mysql+pymysql://ps_sec_pct:{pw}@{host}/{db}",
        rot13("Gnznevaq%25Cpg10k"),
        True,
    ),
    Case(
        "mysql_query_password",
        "--sql",
        "mysql+pymysql://ps_sec_q@{host}/{db}?password={pw}",
        rot13("Htyv11k"),
        True,
    ),
    Case("mongo_escaped_slash", "--mongo_db", MONGO, rot13("Inavyyn%2SFynfu12k"), False),
    Case("mongo_escaped_at_colon", "--mongo_db", MONGO, rot13("Jnyahg%40%3NNg13k"), False),
    Case("mongo_raw_slash", "--mongo_db", MONGO, rot13("Kvthn/Enj14k"), False),
    Case(
        "mongo_multi_host",
        "--mongo_db",
        "mongodb://u:{pw}@{host},127.0.0.1:9/{db}?" + FAST,
        rot13("Lhmh15k"),
        False,
    ),
    Case(
        "mongo_srv",
        "--mongo_db",
        "mongodb+srv://u:{pw}@cluster0.example.invalid/{db}?" + FAST,
        rot13("Mhppuvav16k"),
        False,
    ),
]
MYSQL_USERS = {
    re.search(r"//(\w+)", case.template).group(1): case.password  # type: ignore[union-attr]
    for case in CASES
    if case.template.startswith("mysql")
}


# --- backends ---------------------------------------------------------------------------------------


@dataclass
class Databases:
    pg_db: str
    mysql_db: str
    mongo: Any  # the MongoWireServer

    def host(self, case: Case) -> str:
        if case.flag == "--mongo_db":
            return f"127.0.0.1:{self.mongo.port}"
        return "127.0.0.1:3306" if case.template.startswith("mysql") else "127.0.0.1:5432"

    def db(self, case: Case) -> str:
        if case.flag == "--mongo_db":
            return f"secrets_{case.id}"
        return self.mysql_db if case.template.startswith("mysql") else self.pg_db


@pytest.fixture(scope="module")
def databases() -> Iterator[Databases]:
    import sqlalchemy as sa

    for port in (5432, 3306):
        if not port_open("127.0.0.1", port):
            service_missing(f"no database server on 127.0.0.1:{port}")
    from tests.servers.mongo_wire import MongoWireServer

    name = f"ps_secrets_{uuid.uuid4().hex[:8]}"
    pg = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    my = sa.create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT")
    with pg.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    with my.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
        for user, password in MYSQL_USERS.items():
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(sa.text(f"GRANT ALL ON {name}.* TO '{user}'@'%'"))
    try:
        with MongoWireServer() as mongo:
            yield Databases(name, name, mongo)
    finally:
        with my.connect() as conn:
            for user in MYSQL_USERS:
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        pg.dispose()
        my.dispose()
        drop_database(MARIADB_ADMIN, name)
        drop_database(PG_ADMIN, name)


def stored_sql(admin_url: str, db: str) -> str:
    """Every row of every table of ``db``, as text."""
    import sqlalchemy as sa

    engine = sa.create_engine(sa.make_url(admin_url).set(database=db))
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(  # str(), not repr(): SQLAlchemy's repr shortens long values
                "\t".join(map(str, row))
                for table in metadata.sorted_tables
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()


def stored_mongo(server: Any, db: str) -> str:
    database = server.client[db]
    return "\n".join(repr(doc) for name in database.list_collection_names() for doc in database[name].find())


def files_under(root: Path, since: float = 0.0) -> str:
    """The text of every file under ``root`` changed since ``since`` (a ``time.time()``)."""
    if not root.exists():
        return ""
    return "\n".join(
        path.read_bytes().decode("utf-8", "replace")
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.stat().st_mtime >= since
    )


def prefect_records(flow_name: str) -> str:
    """What the Prefect server keeps of the flow's runs: the runs, their logs and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
        ids = [run.id for run in runs]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))) if ids else []
        artifacts = (
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            )
            if ids
            else []
        )
    texts = [run.model_dump_json() for run in runs]
    texts += [log.message for log in logs]
    texts += [json.dumps(artifact.data, default=str) for artifact in artifacts]
    return "\n".join(texts)


def assert_no_secret(case: Case, **places: str) -> None:
    for where, text in places.items():
        for fragment in case.fragments():
            assert fragment not in text, (
                f"{case.id}: {fragment!r} found in {where}:\n{_around(text, fragment)}"
            )


def _around(text: str, fragment: str) -> str:
    at = text.index(fragment)
    return text[max(at - 200, 0) : at + 200]


# --- the matrix ---------------------------------------------------------------------------------------


def test_the_matrix_is_wide_enough() -> None:
    assert len(CASES) >= 12
    written = "".join(case.written for case in CASES)
    for special in ["/", "#", "?", ":", "%40", "%25", "%2F"]:
        assert special in written, special
    assert any("+srv" in case.template for case in CASES) and any("," in case.template for case in CASES)


@pytest.mark.parametrize("reachable", [True, False], ids=["reachable", "unreachable"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_no_password_in_records_logs_or_errors(
    case: Case,
    reachable: bool,
    databases: Databases,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    host = databases.host(case) if reachable else f"127.0.0.1:{free_port()}"
    url = case.url(host, databases.db(case))
    flow_name = f"secrets-{case.id}-{'up' if reachable else 'down'}-{uuid.uuid4().hex[:6]}"
    ex = Experiment(flow_name)

    @ex.main
    def main(lr: float = 0.1, _run: Any = None) -> float:
        print("epoch 1")
        _run.log_scalar("loss", 0.5, 0)
        return lr

    runs_dir = tmp_path / "runs"
    error: BaseException | None = None
    began, wall = time.monotonic(), time.time() - 1
    try:
        ex.run(options={case.flag: url, "--file_storage": str(runs_dir)})
    except BaseException as exc:
        error = exc
    elapsed = time.monotonic() - began
    error_text = "".join(traceback.format_exception(error)) if error is not None else ""
    if reachable and case.stores:
        assert error is None, error_text
        stored = (
            stored_mongo(databases.mongo, databases.db(case))
            if case.flag == "--mongo_db"
            else stored_sql(MARIADB_ADMIN if "mysql" in case.template else PG_ADMIN, databases.db(case))
        )
        assert "COMPLETED" in stored and "--file_storage" in stored, stored  # meta.options made it there
    else:
        assert error is not None, "a run against a backend that cannot take it succeeded"
        assert elapsed < 20, f"{elapsed:.0f} s to fail"
        stored = stored_mongo(databases.mongo, databases.db(case)) if case.flag == "--mongo_db" else ""
    run_json = files_under(runs_dir)
    if run_json:
        assert redact(url) in run_json  # the URL is recorded, without its password
    out = capsys.readouterr()
    assert_no_secret(
        case,
        error=error_text,
        files=run_json,
        backend=stored,
        logs=caplog.text,
        stdout=out.out,
        stderr=out.err,
        prefect=prefect_records(flow_name),
        journal=files_under(Path(os.environ.get("PREFECT_SACRED_JOURNAL_DIR", tmp_path / "none")), wall),
    )


@pytest.mark.parametrize(
    ("flag", "url", "password"),
    [
        ("--sql", "postgresql://u:Apricot1x@host:port/db", "Apricot1x"),
        ("--sql", "postgresql+nodriver://u:Banana2x@h/db", "Banana2x"),
        ("--sql", "postgresql://u:Cherry@Raw3x@h/db", "Raw3x"),
        ("--sql", "postgres0ql://u:Date4x@h/db", "Date4x"),
        ("--sql", "u:Elder5x@h/db", "Elder5x"),
        ("--sql", "postgresql://u:Fig6x@h/db?read_timeout=soon", "Fig6x"),
        ("--mongo_db", "mongodb://u:Grape7x@/db", "Grape7x"),
        ("--mongo_db", "mongodb://u:Guava/Raw8x@h/db.x:y", "Raw8x"),
        ("--mongo_db", "mongodb://u:Hazel@Raw9x@h/db", "Raw9x"),
        ("--mongo_db", "mongodb://u:Iris10x@h:99999/db", "Iris10x"),
        ("--mongo_db", "u:Jujube11x@h:27017:db", "Jujube11x"),
        ("--mongo_db", "mongodb+srv://u:Kumquat12x@h1,h2/db", "Kumquat12x"),
        ("--mongo_db", "mongodb://u:Lemon%Raw13x@h/db", "Raw13x"),
        ("--mongo_db", "mongodb:/u:Almond14x@h", "Almond14x"),  # a slash short
        ("--sql", "postgresql+psycopg//u:Bilberry15x@h", "Bilberry15x"),  # no colon after the scheme
    ],
)
def test_a_malformed_url_is_one_line_without_its_password(
    flag: str, url: str, password: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = Experiment("malformed")

    @ex.main
    def main(lr: float = 0.1) -> float:
        return lr

    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline([flag, url, "-F", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {'-s/--sql' if flag == '--sql' else '-m/--mongo_db'}" in err, (
        err
    )
    assert password not in err, err
    assert not (tmp_path / "runs").exists()


SCRIPT = """
from prefect_sacred import Experiment
ex = Experiment("secrets_cli")

@ex.automain
def main(lr: float = 0.1):
    print("epoch 1")
    return lr
"""


@pytest.mark.slow
def test_command_line_and_environment_keep_the_password_out_of_stderr_and_files(
    databases: Databases, tmp_path: Path
) -> None:
    """The real command line, and PREFECT_SACRED_OBSERVERS, in a process of their own."""
    script = tmp_path / "secrets_cli.py"
    script.write_text(SCRIPT)
    case = CASES[5]  # pg_everything
    good = case.url(databases.host(case), databases.db(case))
    down = case.url(f"127.0.0.1:{free_port()}", "db")
    journal = tmp_path / "journal"
    env = subprocess_env(PREFECT_SACRED_JOURNAL_DIR=journal)
    runs = [
        ([sys.executable, str(script), "-s", good, "-F", str(tmp_path / "runs")], env, 0),
        ([sys.executable, str(script), "-s", down, "-F", str(tmp_path / "runs_down")], env, 1),
        (
            [sys.executable, str(script), "-F", str(tmp_path / "runs_env")],
            {**env, "PREFECT_SACRED_OBSERVERS": down},
            1,
        ),
    ]
    for argv, run_env, status in runs:
        done = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == status, done.stderr[-3000:]
        assert_no_secret(case, stdout=done.stdout, stderr=done.stderr)
    assert_no_secret(case, files=files_under(tmp_path), backend=stored_sql(PG_ADMIN, databases.db(case)))
