"""Every network call of an observer has a timeout: a backend that accepts TCP and never answers
is treated as down within seconds, and the same observer works again once it answers.

Real faults through :mod:`tests.servers.tcp_proxy` in front of PostgreSQL, MariaDB and the Mongo
wire server. The start is tested with the default timeouts (what users get); events mid-run
with short ones, so a holding backend costs a couple of seconds.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.tcp_proxy import ProxiedBackend, TcpFaultProxy

EX_INFO = {
    "name": "timeouts",
    "base_dir": "/tmp",
    "sources": [],
    "dependencies": [],
    "repositories": [],
    "mainfile": "timeouts.py",
}
HOST_INFO = {"hostname": "h", "os": ["Linux", "x"], "python_version": "3.11", "cpu": "c", "ENV": {}}
PASSWORD = "Pw/with#odd?chars"
SHORT = 2.0  # the timeouts the mid-run tests give (seconds)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def start(observer: Any) -> Any:
    return observer.started_event(EX_INFO, "main", HOST_INFO, now(), {"lr": 0.1}, {"options": {}}, None)


def timed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` on PostgreSQL (its trust auth ignores it; MariaDB's root has none)."""
    import sqlalchemy as sa

    if not url.startswith("postgresql"):
        return url
    return str(sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False))


# --- the proxy itself -----------------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def exchange(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_the_proxy_passes_drops_holds_and_restores(echo_server: int) -> None:
    with TcpFaultProxy("127.0.0.1", echo_server) as proxy:
        assert exchange(proxy.port) == b"ping"
        kept = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
        kept.sendall(b"a")
        assert kept.recv(10) == b"a"

        proxy.hold()  # new and open connections: TCP accepted, nothing answered
        with pytest.raises(TimeoutError):
            exchange(proxy.port)
        kept.sendall(b"b")
        with pytest.raises(TimeoutError):
            kept.recv(10)

        proxy.restore()  # held connections are closed, new ones pass
        assert kept.recv(10) == b""
        assert exchange(proxy.port, b"again") == b"again"

        proxy.drop()  # refused
        with pytest.raises(ConnectionRefusedError):
            exchange(proxy.port)
        proxy.restore()
        assert exchange(proxy.port) == b"ping"
        kept.close()
    assert proxy.open_connections == 0


def test_drop_closes_open_connections(echo_server: int) -> None:
    with TcpFaultProxy("127.0.0.1", echo_server) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
        sock.sendall(b"x")
        assert sock.recv(10) == b"x"
        proxy.drop()
        assert sock.recv(10) == b""
        sock.close()


# --- SQL ------------------------------------------------------------------------------------------


def sql_observer(backend: ProxiedBackend, **timeouts: float) -> Any:
    from prefect_sacred import SqlObserver

    return SqlObserver(with_password(backend.url), **timeouts)


def read_sql_run(backend: ProxiedBackend, run_id: Any) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(backend.direct_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT status, captured_out FROM run WHERE run_id = :id"), {"id": str(run_id)}
            ).one()
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def sql_backend(request: pytest.FixtureRequest) -> ProxiedBackend:
    backend: ProxiedBackend = request.getfixturevalue(
        "pg_proxy" if request.param == "postgresql" else "mariadb_proxy"
    )
    return backend


def test_sql_start_against_a_holding_database_fails_within_seconds(sql_backend: ProxiedBackend) -> None:
    observer = sql_observer(sql_backend)  # the defaults: connect 5 s
    sql_backend.proxy.hold()
    elapsed, error = timed(lambda: start(observer))
    assert error is not None, "the start succeeded against a database that never answers"
    message = str(error)
    assert elapsed < 12, f"the start took {elapsed:.1f} s to fail"
    assert "\n" not in message and PASSWORD not in message and "Pw" not in message
    assert message.startswith("cannot use the database") and f":{sql_backend.proxy.port}/" in message
    assert "timed out" in message or "timeout" in message, message
    observer.engine.dispose()


@pytest.mark.parametrize("fault", ["hold", "drop"])
def test_sql_events_mid_run_fail_within_the_read_timeout_then_work_again(
    sql_backend: ProxiedBackend, fault: str
) -> None:
    observer = sql_observer(sql_backend, connect_timeout=SHORT, read_timeout=SHORT)
    run_id = start(observer)
    observer.heartbeat_event({}, "epoch 1\n", now(), None)

    sql_backend.proxy.set_mode(fault)
    elapsed, error = timed(lambda: observer.heartbeat_event({}, "epoch 1\nepoch 2\n", now(), None))
    assert error is not None and elapsed < 2 * SHORT + 1, f"{elapsed:.1f} s, {error!r}"
    assert "\n" not in str(error) and PASSWORD not in str(error)
    if fault == "hold":
        assert "no answer within" in str(error) or "timed out" in str(error), str(error)

    sql_backend.proxy.restore()  # the same observer, its pool holding connections that died
    observer.heartbeat_event({}, "epoch 1\nepoch 2\nepoch 3\n", now(), None)
    observer.completed_event(now(), 0.5)
    row = read_sql_run(sql_backend, run_id)
    assert row.status == "COMPLETED"
    assert row.captured_out == "epoch 1\nepoch 2\nepoch 3\n"
    observer.engine.dispose()


def test_a_statement_that_gets_no_answer_is_cut_at_the_read_timeout(pg_proxy: ProxiedBackend) -> None:
    """Hold after the connection was checked out and pinged: the statement itself must not hang."""
    import sqlalchemy as sa

    from prefect_sacred.observers.sql.engine import SqlObserverError, begin

    observer = sql_observer(pg_proxy, read_timeout=SHORT)
    start(observer)
    began = time.monotonic()
    expected = pytest.raises(SqlObserverError, match=r"no answer within 2 s \(read_timeout\)")
    with expected, begin(observer.engine) as conn:
        pg_proxy.proxy.hold()
        conn.execute(sa.text("SELECT 1"))
    assert time.monotonic() - began < SHORT + 2
    pg_proxy.proxy.restore()
    with begin(observer.engine) as conn:
        assert conn.execute(sa.text("SELECT 2")).scalar() == 2
    observer.engine.dispose()


def test_sql_timeouts_come_from_the_url_or_the_keywords() -> None:
    from prefect_sacred import ObserverConfigError, SqlObserver
    from prefect_sacred.observers.sql.engine import timeouts_of

    observer = SqlObserver("postgresql+psycopg://u:pw@127.0.0.1:1/db?connect_timeout=3&read_timeout=7.5")
    assert (timeouts_of(observer.engine).connect, timeouts_of(observer.engine).read) == (3.0, 7.5)
    assert "read_timeout" not in str(observer.engine.url)  # libpq would refuse the unknown option
    observer = SqlObserver("mysql+pymysql://u@127.0.0.1:1/db?read_timeout=9", connect_timeout=1)
    assert (timeouts_of(observer.engine).connect, timeouts_of(observer.engine).read) == (1.0, 9.0)
    with pytest.raises(ObserverConfigError, match="read_timeout must be a positive number"):
        SqlObserver("postgresql://u@h/db?read_timeout=-1")
    with pytest.raises(ObserverConfigError, match="connect_timeout must be a number of seconds"):
        SqlObserver("postgresql://u@h/db?connect_timeout=soon")


def test_a_database_that_refuses_fails_the_start_at_once() -> None:
    from prefect_sacred import SqlObserver

    with TcpFaultProxy("127.0.0.1", 9) as proxy:
        proxy.drop()
        observer = SqlObserver(
            f"postgresql+psycopg://u:{PASSWORD.replace('/', '%2F')}@127.0.0.1:{proxy.port}/db"
        )
        elapsed, error = timed(lambda: start(observer))
    assert error is not None and elapsed < 3
    assert "Connection refused" in str(error) and "Pw" not in str(error)


# --- MongoDB --------------------------------------------------------------------------------------


def mongo_observer(backend: ProxiedBackend, db_name: str, **kwargs: Any) -> Any:
    from prefect_sacred import MongoObserver

    return MongoObserver(backend.url, db_name=db_name, **kwargs)


def test_mongo_start_against_a_holding_server_fails_within_seconds(mongo_proxy: ProxiedBackend) -> None:
    observer = mongo_observer(mongo_proxy, "held")  # the defaults: 5 s to find the server
    mongo_proxy.proxy.hold()
    elapsed, error = timed(lambda: start(observer))
    assert error is not None and elapsed < 12, f"{elapsed:.1f} s, {error!r}"
    message = str(error)
    assert "\n" not in message and "Topology Description" not in message
    assert message.startswith(f"cannot reach MongoDB at mongodb://127.0.0.1:{mongo_proxy.proxy.port}")


@pytest.mark.parametrize("fault", ["hold", "drop"])
def test_mongo_events_mid_run_fail_within_the_socket_timeout_then_work_again(
    mongo_proxy: ProxiedBackend, fault: str
) -> None:
    ms = int(SHORT * 1000)
    observer = mongo_observer(
        mongo_proxy, f"mid_{fault}", serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    run_id = start(observer)
    observer.log_metrics({"loss": {"steps": [0], "values": [1.0], "timestamps": [now()]}}, {})
    observer.heartbeat_event({}, "epoch 1\n", now(), None)

    mongo_proxy.proxy.set_mode(fault)
    # An observer may keep a failed beat for its next write, or raise: either way, in bounded time.
    elapsed, error = timed(lambda: observer.heartbeat_event({}, "epoch 1\nepoch 2\n", now(), None))
    assert elapsed < 2 * SHORT + 1, f"{elapsed:.1f} s, {error!r}"
    assert error is None or ("\n" not in str(error).strip() and PASSWORD not in str(error))

    mongo_proxy.proxy.restore()
    observer.heartbeat_event({}, "epoch 1\nepoch 2\nepoch 3\n", now(), None)
    observer.completed_event(now(), 0.5)
    doc = mongo_proxy.extra["server"].client[f"mid_{fault}"].runs.find_one({"_id": run_id})
    assert doc["status"] == "COMPLETED" and doc["captured_out"] == "epoch 1\nepoch 2\nepoch 3\n"


def test_mongo_timeouts_default_and_yield_to_the_users() -> None:
    from prefect_sacred import MongoObserver

    client = MongoObserver("mongodb://127.0.0.1:1/?socketTimeoutMS=1234", db_name="x")._client
    options = client.options.pool_options
    assert options.socket_timeout == 1.234 and options.connect_timeout == 5.0
    assert client.options.server_selection_timeout == 5.0
    client = MongoObserver("mongodb://127.0.0.1:1/", db_name="x", connectTimeoutMS=700)._client
    assert client.options.pool_options.connect_timeout == 0.7
    assert client.options.pool_options.socket_timeout == 30.0


# --- HTTP: S3, Google Cloud Storage, Slack ---------------------------------------------------------


@pytest.fixture
def holding_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    with TcpFaultProxy("127.0.0.1", 9) as proxy:
        proxy.hold()
        yield f"http://127.0.0.1:{proxy.port}"


def test_object_stores_fail_the_start_within_seconds_against_a_silent_endpoint(holding_endpoint: str) -> None:
    pytest.importorskip("boto3")
    pytest.importorskip("google.cloud.storage")
    from prefect_sacred import GoogleCloudStorageObserver, S3Observer

    secret = "AwsSecret/Key+1"
    observers = [
        S3Observer(
            "bucket",
            "runs",
            endpoint_url=holding_endpoint,
            aws_access_key_id="AKIA",
            aws_secret_access_key=secret,
            timeout=(1.0, 30.0),
        ),
        GoogleCloudStorageObserver("bucket", "runs", endpoint_url=holding_endpoint, timeout=(1.0, 30.0)),
    ]
    for observer in observers:
        elapsed, error = timed(lambda observer=observer: start(observer))
        assert error is not None and elapsed < 8, f"{type(observer).__name__}: {elapsed:.1f} s, {error!r}"
        message = str(error)
        assert "\n" not in message and secret not in message
        assert "timed out" in message.lower() or "timeout" in message.lower(), message


def test_s3_uploads_mid_run_fail_within_the_timeouts_then_work_again() -> None:
    pytest.importorskip("moto")
    from prefect_sacred import S3Observer
    from tests.servers.moto_s3 import AtomicMotoServer
    from tests.support import free_port

    port = free_port()
    server = AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with TcpFaultProxy("127.0.0.1", port) as proxy:
            observer = S3Observer(
                "timeouts",
                "runs",
                endpoint_url=f"http://127.0.0.1:{proxy.port}",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                timeout=(1.0, 1.0),
            )
            start(observer)
            proxy.hold()
            elapsed, error = timed(lambda: observer.heartbeat_event({}, "epoch 1\n", now(), None))
            assert error is not None and elapsed < 6, f"{elapsed:.1f} s, {error!r}"
            proxy.restore()
            observer.heartbeat_event({}, "epoch 1\nepoch 2\n", now(), None)
            observer.completed_event(now(), 1)
            assert observer.store.get("runs/1/cout.txt") == b"epoch 1\nepoch 2\n"
    finally:
        server.stop()


def test_a_silent_slack_never_delays_the_run_beyond_its_join_timeout(holding_endpoint: str) -> None:
    pytest.importorskip("requests")
    from prefect_sacred import SlackObserver
    from prefect_sacred.observers.notify.sender import NotificationError

    webhook = f"{holding_endpoint}/services/T000/B000/SlackHookSecret42"
    observer = SlackObserver(webhook, timeout=(1.0, 1.0), join_timeout=5.0, attempts=2)
    start(observer)
    began = time.monotonic()
    observer.completed_event(now(), 1)
    assert time.monotonic() - began < 0.5  # sent from a background thread
    elapsed, error = timed(observer.join)
    assert isinstance(error, NotificationError) and elapsed < 6, f"{elapsed:.1f} s, {error!r}"
    assert "SlackHookSecret42" not in str(error)


def test_a_run_against_a_holding_database_fails_at_its_start_within_seconds(
    pg_proxy: ProxiedBackend, tmp_path: Any
) -> None:
    """The issue's case: ``-s`` naming a PostgreSQL that holds took 131 s before an error."""
    from prefect_sacred import Experiment

    ex = Experiment("timeouts_holding_start")
    ran: list[bool] = []

    @ex.main
    def main(lr: float = 0.1) -> float:
        ran.append(True)
        return lr

    pg_proxy.proxy.hold()
    url = with_password(pg_proxy.url)
    elapsed, error = timed(lambda: ex.run(options={"--sql": url, "--file_storage": str(tmp_path / "runs")}))
    assert error is not None and elapsed < 15, f"{elapsed:.1f} s, {error!r}"
    assert not ran  # the main function never started
    message = str(error)
    assert "SqlObserver" in message and "connection timeout expired" in message, message
    assert PASSWORD not in message and "Pw" not in message


# --- the Prefect API --------------------------------------------------------------------------------


def test_a_silent_prefect_api_costs_the_api_timeout_not_prefects_sixty_seconds(
    holding_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Prefect client of the package comes from prefect_client, with one timeout setting."""
    import uuid

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_sacred.flows.labels import read_run_id

    monkeypatch.setenv("PREFECT_SACRED_API_TIMEOUT", "1")
    with temporary_settings({PREFECT_API_URL: f"{holding_endpoint}/api"}):
        elapsed, error = timed(lambda: read_run_id(uuid.uuid4()))
    assert error is not None, "a Prefect API that never answers gave an answer"
    assert elapsed < 30, f"reading a flow run took {elapsed:.1f} s against a silent API"
