"""Bad values never cost data (issue 8, item 5): a matrix through four storage backends at once.

Every case runs one experiment run observed by FileStorage, SQLite, TinyDB and MongoDB (over
the wire), and ends in one of two ways a user can see: a clear ``TypeError``/``ValueError`` at
the call that named the bad value, or the value stored by the documented rule; in both cases
every backend holds a complete record (final status, stop time, the other metric points, the
other ``info`` entries). Metric rules: :mod:`prefect_sacred.core.metrics`; values that cannot
be encoded: :mod:`prefect_sacred.serialization`.

Most cases drive :class:`~prefect_sacred.core.run.Run` directly (the run and its observers,
without a Prefect flow, so the matrix takes seconds); the last tests go through ``ex.run``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_sacred.core.run import Run
from prefect_sacred.observers.base import InvalidArtifactName
from prefect_sacred.serialization import UNENCODABLE, UnencodableValueWarning
from tests.backends import Backend, BackendUnavailable, RunRecord
from tests.backends.file_storage import FileStorageBackend
from tests.backends.mongo import MongoBackend
from tests.backends.sql import SqliteBackend
from tests.backends.tinydb import TinyDbBackend
from tests.support import service_missing

NAMES = ("file_storage", "sqlite", "tinydb", "mongo")


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    started: list[Backend] = []
    for backend in (FileStorageBackend(), SqliteBackend(), TinyDbBackend(), MongoBackend()):
        try:
            backend.start(tmp_path_factory)
        except BackendUnavailable as exc:
            service_missing(f"{backend.name}: {exc}")
        started.append(backend)
    yield started
    for backend in started:
        backend.stop()


class Bad:
    """A user object whose pickling protocol raises (jsonpickle cannot encode it)."""

    def __getstate__(self) -> Any:
        raise RuntimeError("no state for you")

    def __repr__(self) -> str:
        return "<Bad object>"


def _endless() -> Iterator[int]:
    while True:
        yield 1


def _circular_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


def _circular_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


@dataclass
class Outcome:
    run: Run
    records: dict[str, RunRecord]
    errors: list[BaseException] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


def observe(
    backends: list[Backend],
    body: Callable[[Run], Any],
    *,
    config: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    fail: bool = False,
) -> Outcome:
    """One run through every backend: ``body(run)`` is the main function; its result completes
    the run (``fail``: it fails with the body's exception, which must be raised)."""
    run = Run(
        experiment_info={"name": "bad_values", "base_dir": "/tmp", "sources": [], "dependencies": []},
        host_info={"hostname": "test"},
        meta_info=meta or {},
        config=config if config is not None else {"lr": 0.1},
        command="main",
        observers=[backend.observer() for backend in backends],
        beat_interval=0,
        capture_mode="no",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnencodableValueWarning)
        run.start()
        assert run.start_error is None, run.start_error
        run.log_scalar("before", 1.0)
        if fail:
            with pytest.raises(Exception) as raised:
                body(run)
            run.log_scalar("after", 2.0)
            run.fail([f"{type(raised.value).__name__}: {raised.value}\n"])
        else:
            result = body(run)
            run.log_scalar("after", 2.0)
            run.complete(result)
    records = {name: backend.record(run._id) for name, backend in zip(NAMES, backends, strict=True)}
    assert run.observer_errors == {}, run.observer_errors
    warned = [str(w.message) for w in caught if w.category is UnencodableValueWarning]
    return Outcome(run, records, warned=warned)


def assert_complete(outcome: Outcome, status: str = "COMPLETED") -> None:
    """Every backend has the final status, the times, and the points logged around the case."""
    for name, record in outcome.records.items():
        assert record.status == status, name
        assert record.stop_time is not None, name
        assert record.metrics["before"]["values"] == [1.0], name
        assert record.metrics["after"]["values"] == [2.0], name


def same_number(stored: Any, expected: float, backend: str) -> bool:
    if math.isnan(expected) or math.isinf(expected):
        if backend == "sqlite":  # SQL has neither NaN nor infinities: NULL
            return stored is None
        return stored == expected or (math.isnan(expected) and math.isnan(stored))
    return bool(stored == pytest.approx(expected))


# --- metric values ------------------------------------------------------------------------------

REFUSED_VALUES = [
    pytest.param(1 + 2j, TypeError, id="complex"),
    pytest.param(np.complex128(1 + 2j), TypeError, id="numpy-complex"),
    pytest.param("0.5", TypeError, id="numeric-string"),
    pytest.param("high", TypeError, id="string"),
    pytest.param(None, TypeError, id="none"),
    pytest.param(b"1", TypeError, id="bytes"),
    pytest.param([1.0, 2.0], TypeError, id="list"),
    pytest.param(np.array([1.0, 2.0]), TypeError, id="numpy-array"),
    pytest.param({"v": 1}, TypeError, id="dict"),
    pytest.param(object(), TypeError, id="object"),
    pytest.param(10**400, ValueError, id="int-beyond-float"),
    pytest.param(dt.datetime(2024, 1, 1), TypeError, id="datetime"),
]


@pytest.mark.parametrize(("value", "error"), REFUSED_VALUES)
def test_a_metric_value_no_backend_can_store_is_refused_at_the_call(
    backends: list[Backend], value: Any, error: type[Exception]
) -> None:
    def body(run: Run) -> str:
        run.log_scalar("loss", 0.5)
        with pytest.raises(error) as caught:
            run.log_scalar("loss", value)
        assert "'loss'" in str(caught.value)
        run.log_scalar("loss", 0.25)
        return "done"

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.metrics["loss"]["values"] == [0.5, 0.25], name
        assert record.metrics["loss"]["steps"] == [0, 1], name  # the refused call took no step


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x" * 256, id="256-characters"),
        pytest.param("lo\x00ss", id="nul"),
        pytest.param("", id="empty"),
    ],
)
def test_a_metric_name_a_backend_cannot_store_is_refused_at_the_call(
    backends: list[Backend], name: str
) -> None:
    """SQL's metric.name holds 255 characters without NUL: such a name was stored by five
    backends and dropped by the SQL ones; now no backend gets it and the call says why."""

    def body(run: Run) -> str:
        with pytest.raises(ValueError, match="cannot be stored by every backend") as caught:
            run.log_scalar(name, 0.5)
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
        run.log_scalar("x" * 255, 0.25)  # the longest name every backend keeps
        return "done"

    outcome = observe(backends, body)
    assert_complete(outcome)
    for backend, record in outcome.records.items():
        assert set(record.metrics) - {"before", "after"} == {"x" * 255}, backend


ACCEPTED_VALUES = [
    pytest.param(np.float32(0.5), 0.5, id="numpy-float32"),
    pytest.param(np.int64(3), 3.0, id="numpy-int64"),
    pytest.param(np.bool_(True), 1.0, id="numpy-bool"),
    pytest.param(True, 1.0, id="bool"),
    pytest.param(decimal.Decimal("1.25"), 1.25, id="decimal"),
    pytest.param(fractions.Fraction(1, 4), 0.25, id="fraction"),
    pytest.param(2**70, float(2**70), id="int-beyond-64-bits"),
    pytest.param(float("nan"), float("nan"), id="nan"),
    pytest.param(float("inf"), float("inf"), id="infinity"),
    pytest.param(np.float64("-inf"), float("-inf"), id="numpy-minus-infinity"),
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED_VALUES)
def test_a_metric_value_of_any_real_number_type_is_stored_by_the_rule(
    backends: list[Backend], value: Any, expected: float
) -> None:
    def body(run: Run) -> None:
        run.log_scalar("acc", 0.5)
        run.log_scalar("acc", value)

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        values = record.metrics["acc"]["values"]
        assert values[0] == 0.5 and len(values) == 2, name
        assert same_number(values[1], expected, name), (name, values[1])


# --- metric steps and names ---------------------------------------------------------------------

REFUSED_STEPS = [
    pytest.param("3", TypeError, id="string"),
    pytest.param(float("nan"), ValueError, id="nan"),
    pytest.param(float("inf"), ValueError, id="infinity"),
    pytest.param(2**64, ValueError, id="beyond-64-bits"),
    pytest.param(-(2**63) - 1, ValueError, id="below-64-bits"),
    pytest.param(np.uint64(2**64 - 1), ValueError, id="numpy-uint64-max"),
    pytest.param(1 + 1j, TypeError, id="complex"),
    pytest.param([1], TypeError, id="list"),
]


@pytest.mark.parametrize(("step", "error"), REFUSED_STEPS)
def test_a_metric_step_no_backend_can_store_is_refused_at_the_call(
    backends: list[Backend], step: Any, error: type[Exception]
) -> None:
    def body(run: Run) -> None:
        run.log_scalar("loss", 0.5, 10)
        with pytest.raises(error, match="'loss'"):
            run.log_scalar("loss", 0.4, step)
        run.log_scalar("loss", 0.3)  # the counter is untouched by the refused call

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.metrics["loss"]["steps"] == [10, 11], name
        assert record.metrics["loss"]["values"] == [0.5, 0.3], name


def test_numpy_and_fractional_steps_are_stored_as_given(backends: list[Backend]) -> None:
    def body(run: Run) -> None:
        run.log_scalar("loss", 0.5, np.int64(2**62))
        run.log_scalar("loss", 0.4, 2.5)
        run.log_scalar("loss", 0.3, np.int32(-3))

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.metrics["loss"]["steps"] == [2**62, 2.5, -3], name


@pytest.mark.parametrize("metric_name", [7, None, b"loss"], ids=["int", "none", "bytes"])
def test_a_metric_name_that_is_not_a_string_is_refused(backends: list[Backend], metric_name: Any) -> None:
    def body(run: Run) -> None:
        with pytest.raises(TypeError, match="metric name"):
            run.log_scalar(metric_name, 1.0)

    assert_complete(observe(backends, body))


def test_metric_names_with_dots_dollars_and_unicode_are_stored(backends: list[Backend]) -> None:
    def body(run: Run) -> None:
        run.log_scalar("train.loss", 1.0)
        run.log_scalar("$cost", 2.0)
        run.log_scalar("Genauigkeit-ü", 3.0)

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        stored = {metric: series["values"] for metric, series in record.metrics.items()}
        assert stored["train.loss"] == [1.0] and stored["$cost"] == [2.0], name
        assert stored["Genauigkeit-ü"] == [3.0], name


# --- info and results ---------------------------------------------------------------------------

UNENCODABLE_VALUES = [
    pytest.param(Bad, "RuntimeError: no state for you", id="getstate-raises"),
    pytest.param(threading.Lock, "lock", id="lock"),
    pytest.param(threading.RLock, "lock", id="rlock"),
    pytest.param(_endless, "iterator", id="endless-generator"),
    pytest.param(lambda: iter([1, 2, 3]), "iterator", id="list-iterator"),
]


def _marked(value: Any, reason: str) -> bool:
    return isinstance(value, dict) and UNENCODABLE in value and reason in value.get("py/error", "")


@pytest.mark.parametrize(("make", "reason"), UNENCODABLE_VALUES)
def test_an_info_value_that_cannot_be_encoded_is_a_marked_repr_in_its_place(
    backends: list[Backend], make: Callable[[], Any], reason: str
) -> None:
    def body(run: Run) -> None:
        run.info["epoch"] = 3
        run.info["bad"] = make()
        run.info["nested"] = {"ok": [1, 2], "bad": make()}

    outcome = observe(backends, body)
    assert_complete(outcome)
    assert outcome.warned, "no UnencodableValueWarning"
    for name, record in outcome.records.items():
        assert record.info["epoch"] == 3, name
        assert _marked(record.info["bad"], reason), (name, record.info["bad"])
        assert record.info["nested"]["ok"] == [1, 2], name
        assert _marked(record.info["nested"]["bad"], reason), name


@pytest.mark.parametrize(("make", "reason"), UNENCODABLE_VALUES[:3])
def test_a_result_that_cannot_be_encoded_leaves_the_record_complete(
    backends: list[Backend], make: Callable[[], Any], reason: str
) -> None:
    outcome = observe(backends, lambda run: {"accuracy": 0.9, "model": make()})
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.result["accuracy"] == 0.9, name
        assert _marked(record.result["model"], reason), (name, record.result)


def test_a_result_whose_getstate_raises_is_itself_the_marked_repr(backends: list[Backend]) -> None:
    outcome = observe(backends, lambda run: Bad())
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert _marked(record.result, "no state for you"), name
        assert record.result[UNENCODABLE] == "<Bad object>", name


def test_circular_info_and_results_are_stored(backends: list[Backend]) -> None:
    def body(run: Run) -> Any:
        run.info["loop"] = _circular_dict()
        return _circular_list()

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.info["loop"]["name"] == "loop", name
        assert record.result[0] == 1, name


ENCODABLE_INFO = [
    pytest.param({1, 2}, id="set"),
    pytest.param(np.arange(3), id="numpy-array"),
    pytest.param(np.float64(0.5), id="numpy-scalar"),
    pytest.param(dt.date(2024, 5, 6), id="date"),
    pytest.param(decimal.Decimal("2.50"), id="decimal"),
    pytest.param(2**100, id="int-beyond-64-bits"),
    pytest.param({(1, 2): "tuple key", 3: "int key"}, id="non-string-keys"),
    pytest.param({"a.b": 1, "$c": 2}, id="keys-mongo-rejects"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(1 + 2j, id="complex"),
]


@pytest.mark.parametrize("value", ENCODABLE_INFO)
def test_info_and_results_jsonpickle_can_encode_are_stored_without_losing_the_run(
    backends: list[Backend], value: Any
) -> None:
    def body(run: Run) -> Any:
        run.info["epoch"] = 1
        run.info["value"] = value
        return {"value": value, "score": 1.5}

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.info["epoch"] == 1 and "value" in record.info, name
        assert record.result["score"] == 1.5 and "value" in record.result, name


def test_a_run_that_fails_with_bad_values_around_still_records_the_failure(backends: list[Backend]) -> None:
    def body(run: Run) -> None:
        run.info["lock"] = threading.Lock()
        run.result = Bad()
        raise ValueError("diverged")

    outcome = observe(backends, body, fail=True)
    assert_complete(outcome, status="FAILED")
    for name, record in outcome.records.items():
        assert "ValueError: diverged" in "".join(record.fail_trace or []), name
        assert _marked(record.info["lock"], "lock"), name


# --- config -------------------------------------------------------------------------------------

CONFIG_VALUES = [
    pytest.param({1, 2}, id="set"),
    pytest.param(np.int64(4), id="numpy-int"),
    pytest.param(np.array([0.5, 1.5]), id="numpy-array"),
    pytest.param(dt.date(2024, 1, 2), id="date"),
    pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5), id="datetime"),
    pytest.param(decimal.Decimal("0.1"), id="decimal"),
    pytest.param((1, "two"), id="tuple"),
    pytest.param(b"\x00\xff", id="bytes"),
    pytest.param(Path("/data/train"), id="path"),
    pytest.param(2**80, id="int-beyond-64-bits"),
    pytest.param({"inner": {3, 4}, "a.b": 1}, id="nested-set-and-dotted-key"),
]


@pytest.mark.parametrize("value", CONFIG_VALUES)
def test_config_and_config_updates_are_stored_by_every_backend(backends: list[Backend], value: Any) -> None:
    """Mongo used to fail the start on these (``meta.config_updates`` was written unflattened)."""
    outcome = observe(
        backends,
        lambda run: "ok",
        config={"lr": 0.1, "x": value},
        meta={"config_updates": {"x": value}, "command": "main"},
    )
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.config["lr"] == 0.1 and "x" in record.config, name
        if name != "sqlite":  # Sacred's SQL schema has no meta column but ours (meta_json)
            assert "x" in record.meta["config_updates"], name


def test_a_config_value_that_cannot_be_copied_fails_the_run_as_a_data_error(backends: list[Backend]) -> None:
    """Not an observer's failure: the run's own data. Every backend records the failed run."""
    run = Run(
        experiment_info={"name": "bad_values", "base_dir": "/tmp", "sources": [], "dependencies": []},
        host_info={},
        meta_info={"config_updates": {"x": Bad()}},
        config={"lr": 0.1, "x": Bad()},
        command="main",
        observers=[backend.observer() for backend in backends],
        beat_interval=0,
        capture_mode="no",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnencodableValueWarning)
        run.start()
        assert run.start_error is not None
        message = str(run.start_error)
        assert "config value 'x'" in message and "no state for you" in message
        assert "observer" not in message.lower()
        run.fail([f"{message}\n"])
    for name, backend in zip(NAMES, backends, strict=True):
        record = backend.record(run._id)
        assert record.status == "FAILED" and record.config["lr"] == 0.1, name
        assert "config value 'x'" in "".join(record.fail_trace or []), name


# --- artifact names -----------------------------------------------------------------------------

REFUSED_NAMES = ["../escape.txt", "/etc/passwd", "", "a/../../b.txt", "a\0b", "..", "sub/../../x"]


@pytest.mark.parametrize("artifact", REFUSED_NAMES, ids=lambda name: repr(name))
def test_an_artifact_name_that_leaves_the_run_is_refused_and_the_run_goes_on(
    backends: list[Backend], tmp_path: Path, artifact: str
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")

    def body(run: Run) -> None:
        with pytest.raises(InvalidArtifactName):
            run.add_artifact(source, name=artifact)
        run.add_artifact(source, name="models/model.bin")

    outcome = observe(backends, body)
    assert_complete(outcome)
    for name, record in outcome.records.items():
        assert record.artifacts == {"models/model.bin": b"weights"}, name


def test_an_artifact_name_one_observer_reserves_is_stored_by_the_others(
    backends: list[Backend], tmp_path: Path
) -> None:
    source = tmp_path / "metrics.json"
    source.write_text("{}")

    def body(run: Run) -> None:
        with pytest.raises(InvalidArtifactName, match="own file"):
            run.add_artifact(source)  # FileStorage's own metrics.json

    outcome = observe(backends, body)
    assert_complete(outcome)
    assert outcome.records["file_storage"].artifacts == {}
    for name in ("sqlite", "tinydb", "mongo"):
        assert outcome.records[name].artifacts == {"metrics.json": b"{}"}, name


# --- through a real flow run --------------------------------------------------------------------


def test_a_main_function_that_logs_a_complex_value_fails_and_every_backend_says_so(
    backends: list[Backend],
) -> None:
    """Before: the complex value lost its beat's points and the final event was never sent."""
    from prefect_sacred import Experiment

    ex = Experiment("bad_values_flow")
    ex.observers += [backend.observer() for backend in backends]

    @ex.main
    def train(_run: Any = None) -> None:
        for step in range(5):
            _run.log_scalar("loss", 1 / (step + 1))
        _run.log_scalar("loss", 1 + 2j)

    with pytest.raises(TypeError, match="metric 'loss': value \\(1\\+2j\\)"):
        ex.run(options={"--beat-interval": 0.1})
    assert ex.last_run is not None
    for name, backend in zip(NAMES, backends, strict=True):
        record = backend.record(ex.last_run._id)
        assert record.status == "FAILED", name
        assert record.metrics["loss"]["values"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]), name


def test_a_set_given_with_config_updates_is_stored_by_every_backend(backends: list[Backend]) -> None:
    """``with x={1,2}``: MongoObserver used to fail the start on ``meta.config_updates``."""
    from prefect_sacred import Experiment

    ex = Experiment("bad_values_flow")
    ex.observers += [backend.observer() for backend in backends]

    @ex.main
    def train(x: Any = None) -> int:
        return len(x)

    run = ex.run(config_updates={"x": {1, 2}})
    for name, backend in zip(NAMES, backends, strict=True):
        record = backend.record(run._id)
        assert record.status == "COMPLETED" and record.result == 2, name
        assert record.config["x"] in ({"py/set": [1, 2]}, [1, 2]), (name, record.config["x"])
