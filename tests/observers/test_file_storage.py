"""Format tests for the FileStorageObserver: Sacred's exact files, written crash-safely.

The observer's events are called directly with keyword arguments, as ``Run`` calls them; no
Prefect is involved. Expected contents follow Sacred 0.8.7's FileStorageObserver (reference
``sacred-observers.md`` 3.2 and 5.3) plus the guarantees issue 2 adds (atomic files, safe ids,
refused artifact names, a complete ``metrics.json`` at the end).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import FileStorageObserver, InvalidArtifactName
from prefect_sacred.core.metrics import linearize_metrics
from prefect_sacred.observers import file_storage, files, metrics_log
from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.files import RewriteSchedule
from prefect_sacred.observers.metrics_log import MetricsLog
from prefect_sacred.utils import apply_backspaces_and_linefeeds

T1 = dt.datetime(1999, 5, 4, 3, 2, 1)  # microsecond == 0: Sacred's isoformat() would drop ".000000"
T2 = dt.datetime(1999, 5, 5, 5, 5, 5, 12345)
T3 = dt.datetime(1999, 5, 6, 6, 6, 6)

RUN_JSON_STARTED_KEYS = {
    "experiment",
    "command",
    "host",
    "start_time",
    "meta",
    "status",
    "resources",
    "artifacts",
    "heartbeat",
}


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Any]:
    """An experiment with a main file and a local module, as ``gather_experiment_info`` sees it."""
    base = tmp_path / "project"
    (base / "pkg").mkdir(parents=True)
    (base / "train.py").write_text("print('main')\n")
    (base / "pkg" / "helpers.py").write_text("X = 1\n")
    return {
        "name": "exp",
        "base_dir": str(base),
        "sources": [
            ("train.py", _md5(base / "train.py")),
            ("pkg/helpers.py", _md5(base / "pkg" / "helpers.py")),
        ],
        "dependencies": ["numpy==2.0.0"],
        "repositories": [],
        "mainfile": "train.py",
    }


@pytest.fixture
def basedir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def observer(basedir: Path) -> FileStorageObserver:
    return FileStorageObserver(basedir)


HOST = {"hostname": "box", "os": ["Linux", "Linux-6"], "python_version": "3.11.7", "cpu": "x86", "ENV": {}}
META = {"command": "main", "options": {"--beat-interval": None}, "comment": "hello"}
CONFIG = {"a": 1, "nested": {"b": [1, 2]}, "seed": 42}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _start(
    observer: FileStorageObserver, ex_info: dict[str, Any], _id: Any = None, start_time: dt.datetime = T1
) -> Any:
    return observer.started_event(
        ex_info=ex_info,
        command="main",
        host_info=HOST,
        start_time=start_time,
        config=CONFIG,
        meta_info=META,
        _id=_id,
    )


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_json(observer: FileStorageObserver) -> dict[str, Any]:
    assert observer.dir is not None
    return _read(Path(observer.dir, "run.json"))


def _cout(run_dir: Path) -> str:
    """``cout.txt`` exactly (``read_text`` would turn a kept ``\r`` into ``\n``)."""
    with open(run_dir / "cout.txt", encoding="utf-8", newline="") as handle:
        return handle.read()


# --- started, queued ------------------------------------------------------------------------


def test_started_event_writes_sacreds_run_json_exactly(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    assert not basedir.exists()  # created lazily
    _id = _start(observer, sources)

    assert _id == "1"
    run_dir = basedir / "1"
    run = _read(run_dir / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS
    assert run["start_time"] == "1999-05-04T03:02:01.000000"
    assert run["status"] == "RUNNING"
    assert run["heartbeat"] is None
    assert run["resources"] == [] and run["artifacts"] == []
    assert run["command"] == "main"
    assert run["host"] == HOST
    assert run["meta"] == META
    assert run["experiment"]["name"] == "exp"
    assert run["experiment"]["mainfile"] == "train.py"
    assert _read(run_dir / "config.json") == CONFIG
    assert _cout(run_dir) == ""
    # Sacred's formatting: sorted keys, indent 2.
    assert (run_dir / "run.json").read_text() == json.dumps(run, sort_keys=True, indent=2)
    assert sorted(os.listdir(run_dir)) == ["config.json", "cout.txt", "run.json"]


def test_started_event_does_not_mutate_the_callers_ex_info(
    observer: FileStorageObserver, sources: dict[str, Any]
) -> None:
    before = json.dumps(sources)
    _start(observer, sources)
    assert json.dumps(sources) == before  # Sacred rewrites the shared dict's sources in place


def test_queued_run_json_and_started_reuses_its_directory(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    queue_time = dt.datetime(2020, 1, 2, 3, 4, 5)
    _id = observer.queued_event(
        ex_info=sources,
        command="main",
        host_info=HOST,
        queue_time=queue_time,
        config=CONFIG,
        meta_info=META,
        _id=None,
    )
    assert _id == "1"
    queued = _read(basedir / "1" / "run.json")
    assert set(queued) == {"experiment", "command", "host", "meta", "status"}
    assert queued["status"] == "QUEUED"
    assert queued["meta"] == {**META, "queue_time": "2020-01-02T03:04:05.000000"}
    assert _read(basedir / "1" / "config.json") == CONFIG

    # A new observer instance (another process, later) starts the queued run by its id.
    starter = FileStorageObserver(basedir)
    assert _start(starter, sources, _id="1") == "1"
    assert sorted(os.listdir(basedir)) == ["1", "_sources"]
    run = _read(basedir / "1" / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS
    assert run["status"] == "RUNNING"

    # A running (not queued) directory with that id is never taken over.
    with pytest.raises(FileExistsError):
        _start(FileStorageObserver(basedir), sources, _id="1")


# --- ids ------------------------------------------------------------------------------------


def test_ids_are_sequential_strings_and_a_given_id_is_used_verbatim(
    basedir: Path, sources: dict[str, Any]
) -> None:
    first, second = FileStorageObserver(basedir), FileStorageObserver(basedir)
    assert _start(first, sources) == "1"
    assert _start(second, sources) == "2"
    assert _start(FileStorageObserver(basedir), sources, _id="my-run") == "my-run"
    assert (basedir / "my-run" / "run.json").exists()
    assert _start(FileStorageObserver(basedir), sources) == "3"  # non-numeric names are ignored
    with pytest.raises(FileExistsError):
        _start(FileStorageObserver(basedir), sources, _id="my-run")


def test_one_instance_records_runs_one_after_the_other(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.log_metrics(metrics_by_name=_batch("loss", range(3)), info={})
    observer.heartbeat_event(info={"x": 1}, captured_out="first\n", beat_time=T2, result=1)
    observer.completed_event(stop_time=T3, result=1)
    assert _start(observer, sources) == "2"
    observer.heartbeat_event(info={}, captured_out="second\n", beat_time=T2, result=None)
    observer.completed_event(stop_time=T3, result=2)
    assert _cout(basedir / "2") == "second\n"
    assert _read(basedir / "2" / "metrics.json") == {}
    assert not (basedir / "2" / "info.json").exists()
    assert _read(basedir / "1" / "metrics.json")["loss"]["values"] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("bad_id", ["..", "a/b", "../escape", ""])
def test_an_id_that_is_not_a_directory_name_is_refused(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], bad_id: str
) -> None:
    with pytest.raises(ValueError):
        _start(observer, sources, _id=bad_id)
    assert not (basedir.parent / "escape").exists()


def _start_in_subprocess(basedir: str, barrier: Any, results: Any) -> None:
    observer = FileStorageObserver(basedir)
    barrier.wait()
    results.put(
        observer.started_event(
            ex_info={"name": "exp", "base_dir": basedir, "sources": []},
            command="main",
            host_info={},
            start_time=T1,
            config={},
            meta_info={},
            _id=None,
        )
    )


def test_fifty_processes_starting_at_once_get_fifty_distinct_ids(basedir: Path) -> None:
    # forkserver: children fork from a clean single-threaded server, not from pytest, which
    # holds Prefect's threads (forking those can leave a child wedged or failing at exit).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # import once in the server, not in each child
    count = 50
    barrier = context.Barrier(count)
    results = context.Queue()
    processes = [
        context.Process(target=_start_in_subprocess, args=(str(basedir), barrier, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    ids = [results.get(timeout=60) for _ in range(count)]
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * count
    assert sorted(ids, key=int) == [str(n) for n in range(1, count + 1)]
    for _id in ids:
        assert _read(basedir / _id / "run.json")["status"] == "RUNNING"


# --- heartbeat and the end of a run ---------------------------------------------------------


def test_heartbeats_store_cumulative_output_info_and_result(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    run_dir = basedir / "1"
    captured = ""
    for beat in range(5):
        captured += f"line {beat}\n" * (beat + 1)
        info = {"beat": beat, "tags": ["a", "b"]}
        observer.heartbeat_event(info=info, captured_out=captured, beat_time=T2, result=beat)
        assert _cout(run_dir) == captured
        assert _read(run_dir / "info.json") == info
        run = _read(run_dir / "run.json")
        assert run["heartbeat"] == "1999-05-05T05:05:05.012345"
        assert run["result"] == beat
    # A beat without new output changes nothing in cout.txt.
    observer.heartbeat_event(info={"beat": 9}, captured_out=captured, beat_time=T3, result=None)
    assert _cout(run_dir) == captured
    assert _read(run_dir / "run.json")["heartbeat"] == "1999-05-06T06:06:06.000000"


def test_info_json_is_only_written_for_non_empty_info(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)
    assert not (basedir / "1" / "info.json").exists()


def test_info_and_result_values_json_cannot_express_are_stored_with_jsonpickle(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.heartbeat_event(
        info={"pair": (1, 2), "tags": {"x"}}, captured_out="", beat_time=T2, result=(3, 4)
    )
    assert _read(basedir / "1" / "info.json") == {"pair": {"py/tuple": [1, 2]}, "tags": {"py/set": ["x"]}}
    assert _read(basedir / "1" / "run.json")["result"] == {"py/tuple": [3, 4]}


def test_completed_event(observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]) -> None:
    _start(observer, sources)
    observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)
    observer.completed_event(stop_time=T3, result={"acc": 0.5})
    run = _read(basedir / "1" / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS | {"result", "stop_time"}
    assert run["status"] == "COMPLETED"
    assert run["stop_time"] == "1999-05-06T06:06:06.000000"
    assert run["result"] == {"acc": 0.5}


@pytest.mark.parametrize("status", ["INTERRUPTED", "TIMEOUT", "CUSTOM_INTERRUPTION"])
def test_interrupted_event_stores_the_status_verbatim(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], status: str
) -> None:
    _start(observer, sources)
    observer.interrupted_event(interrupt_time=T3, status=status)
    run = _read(basedir / "1" / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS | {"stop_time"}
    assert run["status"] == status
    assert run["stop_time"] == "1999-05-06T06:06:06.000000"


def test_failed_event_stores_the_fail_trace_list(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    trace = [
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        "ValueError: boom\n",
    ]
    observer.failed_event(fail_time=T3, fail_trace=trace)
    run = _read(basedir / "1" / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS | {"stop_time", "fail_trace"}
    assert run["status"] == "FAILED"
    assert run["fail_trace"] == trace
    assert run["stop_time"] == "1999-05-06T06:06:06.000000"


# --- metrics --------------------------------------------------------------------------------


def _batch(name: str, steps: range, start: float = 1_000_000_000.0) -> dict[str, dict[str, list[Any]]]:
    """One beat's ``metrics_by_name``, as ``MetricsLogger.drain`` produces it."""
    return linearize_metrics([(name, step, float(step), start + step) for step in steps])


def _expected_timestamps(steps: range, start: float = 1_000_000_000.0) -> list[str]:
    epoch = dt.datetime(1970, 1, 1)
    return [(epoch + dt.timedelta(seconds=start + step)).strftime("%Y-%m-%dT%H:%M:%S.%f") for step in steps]


def test_first_beat_writes_an_empty_metrics_json(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.log_metrics(metrics_by_name={}, info={})
    observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)
    assert _read(basedir / "1" / "metrics.json") == {}


def test_metrics_json_is_complete_in_sacreds_shape_after_many_beats(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    run_dir = basedir / "1"
    beats, per_beat = 60, 7
    for beat in range(beats):
        steps = range(beat * per_beat, (beat + 1) * per_beat)
        metrics = {**_batch("loss", steps), **_batch("acc", steps[:2])}
        observer.log_metrics(metrics_by_name=metrics, info={})
        observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)
        assert (run_dir / file_storage.METRICS_JOURNAL).exists()
        # Mid-run metrics.json is always valid JSON holding a prefix of the history.
        partial = _read(run_dir / "metrics.json")
        if "loss" in partial:
            done = len(partial["loss"]["values"])
            assert partial["loss"]["values"] == [float(s) for s in range(done)]
    observer.completed_event(stop_time=T3, result=None)

    metrics = _read(run_dir / "metrics.json")
    all_steps = range(beats * per_beat)
    assert set(metrics) == {"loss", "acc"}
    assert set(metrics["loss"]) == {"values", "steps", "timestamps"}  # no "name", as Sacred
    assert metrics["loss"]["steps"] == list(all_steps)
    assert metrics["loss"]["values"] == [float(s) for s in all_steps]
    assert metrics["loss"]["timestamps"] == _expected_timestamps(all_steps)
    acc_steps = [s for beat in range(beats) for s in range(beat * per_beat, beat * per_beat + 2)]
    assert metrics["acc"]["steps"] == acc_steps
    assert not (run_dir / file_storage.METRICS_JOURNAL).exists()
    assert sorted(os.listdir(run_dir)) == ["config.json", "cout.txt", "metrics.json", "run.json"]


class _DiskFillsUp:
    """``open`` for the journal whose files write half of what they are given, then raise."""

    def __init__(self) -> None:
        self.failures = 0

    def __call__(self, path: str, mode: str = "r", **kwargs: Any) -> Any:
        handle = open(path, mode, **kwargs)  # noqa: SIM115 (closed by the caller's with)
        owner = self

        class Half:
            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: Any) -> None:
                handle.close()

            def seek(self, *args: Any) -> int:
                return handle.seek(*args)

            def write(self, data: Any) -> int:
                handle.write(bytes(data)[: len(data) // 2])
                owner.failures += 1
                raise OSError("disk full")

        return Half()


def test_a_failed_journal_append_stores_nothing_and_its_retry_stores_each_point_once(
    observer: FileStorageObserver,
    basedir: Path,
    sources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _start(observer, sources)
    observer.log_metrics(metrics_by_name=_batch("loss", range(0, 3)), info={})
    journal_path = basedir / "1" / file_storage.METRICS_JOURNAL
    before = journal_path.read_bytes()
    disk = _DiskFillsUp()
    monkeypatch.setattr(metrics_log, "open", disk, raising=False)
    second = _batch("loss", range(3, 6))
    with pytest.raises(OSError, match="disk full"):
        observer.log_metrics(metrics_by_name=second, info={})
    assert disk.failures == 1
    assert journal_path.read_bytes() == before  # the half line was cut off again
    monkeypatch.undo()
    observer.log_metrics(metrics_by_name=second, info={})  # the delivery worker's retry
    observer.log_metrics(metrics_by_name=_batch("loss", range(6, 9)), info={})
    journal = MetricsLog(str(journal_path))
    assert journal.replay()["loss"]["steps"] == list(range(9))
    observer.completed_event(stop_time=T3, result=None)
    assert _read(basedir / "1" / "metrics.json")["loss"]["steps"] == list(range(9))


def test_metrics_json_rewrites_are_byte_identical_to_a_full_dump(tmp_path: Path) -> None:
    """Names arriving out of order, odd names, NaN and infinities, every beat rewritten."""
    from prefect_sacred.observers.metrics_log import MetricsJsonFile

    path = str(tmp_path / "metrics.json")
    incremental = MetricsJsonFile(path)
    incremental.write()
    assert Path(path).read_text() == json.dumps({}, sort_keys=True, indent=2)
    whole: dict[str, dict[str, list[Any]]] = {}
    names = ["m", "b", "z", 'a\u00e9"q', "b", "0", "m"]
    for beat, name in enumerate(names):
        values = [beat + 0.5, float("nan"), float("inf"), -beat, True][: beat % 5 + 1]
        series = {
            "steps": list(range(len(values))),
            "values": values,
            "timestamps": [f"2024-01-01T00:00:0{beat}.000001"] * len(values),
        }
        incremental.add({name: series})
        kept = whole.setdefault(name, {"values": [], "steps": [], "timestamps": []})
        for key in kept:
            kept[key].extend(series[key])
        if beat % 2:
            incremental.write()
            assert Path(path).read_text() == json.dumps(whole, sort_keys=True, indent=2)
    incremental.write()
    assert Path(path).read_text() == json.dumps(whole, sort_keys=True, indent=2)


def test_a_metrics_json_changed_behind_the_observer_is_rebuilt_from_the_journal(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.log_metrics(metrics_by_name=_batch("loss", range(0, 3)), info={})
    (basedir / "1" / "metrics.json").write_text("{}")
    observer.log_metrics(metrics_by_name=_batch("loss", range(3, 5)), info={})
    observer.completed_event(stop_time=T3, result=None)
    assert _read(basedir / "1" / "metrics.json")["loss"]["steps"] == list(range(5))


def test_the_journal_replays_past_a_line_cut_short_and_appends_after_it(tmp_path: Path) -> None:
    """Both formats, FileStorage's and TinyDB's, come from this one journal."""
    path = tmp_path / "deep" / "metrics.journal"
    first = MetricsLog(str(path))
    stamp = dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    first.append({"loss": {"steps": [0], "values": [0.5], "timestamps": [stamp], "name": "loss"}})
    with open(path, "a") as journal:
        journal.write('{"name": "loss", "steps": [1')  # a process killed mid-line
    MetricsLog(str(path)).append({"acc": {"steps": [2], "values": [1.0], "timestamps": [stamp]}})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {
        "name": "loss",
        "steps": [0],
        "values": [0.5],
        "timestamps": ["2024-01-02T03:04:05.000006"],
    }
    assert first.replay() == {
        "loss": {"steps": [0], "values": [0.5], "timestamps": ["2024-01-02T03:04:05.000006"]},
        "acc": {"steps": [2], "values": [1.0], "timestamps": ["2024-01-02T03:04:05.000006"]},
    }
    assert MetricsLog(str(tmp_path / "missing")).replay() == {}


# --- sources, resources, artifacts ----------------------------------------------------------


def test_sources_are_content_addressed_and_deduplicated_across_runs(
    basedir: Path, sources: dict[str, Any]
) -> None:
    base = Path(sources["base_dir"])
    main_md5, helper_md5 = _md5(base / "train.py"), _md5(base / "pkg" / "helpers.py")
    for expected_id in ("1", "2"):
        observer = FileStorageObserver(basedir)
        assert _start(observer, sources) == expected_id
        run = _run_json(observer)
        assert run["experiment"]["sources"] == [
            ["train.py", f"_sources/train_{main_md5}.py"],
            ["pkg/helpers.py", f"_sources/helpers_{helper_md5}.py"],
        ]
    assert sorted(os.listdir(basedir / "_sources")) == sorted(
        [f"train_{main_md5}.py", f"helpers_{helper_md5}.py"]
    )
    assert (basedir / "_sources" / f"train_{main_md5}.py").read_text() == "print('main')\n"
    # A changed source is a new content address; the old version stays.
    (base / "train.py").write_text("print('changed')\n")
    changed = dict(sources, sources=[("train.py", _md5(base / "train.py"))])
    _start(FileStorageObserver(basedir), changed)
    assert len(os.listdir(basedir / "_sources")) == 3


def test_copy_sources_false_records_absolute_paths(basedir: Path, sources: dict[str, Any]) -> None:
    observer = FileStorageObserver(basedir, copy_sources=False)
    _start(observer, sources)
    base = Path(sources["base_dir"])
    assert _run_json(observer)["experiment"]["sources"] == [
        ["train.py", str(base / "train.py")],
        ["pkg/helpers.py", str(base / "pkg" / "helpers.py")],
    ]
    assert not (basedir / "_sources").exists()


def test_resources_are_content_addressed_and_recorded_once(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    resource = tmp_path / "data.csv"
    resource.write_text("a,b\n1,2\n")
    md5 = _md5(resource)
    _start(observer, sources)
    observer.resource_event(filename=str(resource))
    observer.resource_event(filename=str(resource))
    stored = basedir / "_resources" / f"data_{md5}.csv"
    assert _run_json(observer)["resources"] == [[str(resource), str(stored)]]
    assert stored.read_text() == "a,b\n1,2\n"

    second = FileStorageObserver(basedir)
    _start(second, sources)
    second.resource_event(filename=str(resource))
    assert os.listdir(basedir / "_resources") == [f"data_{md5}.csv"]
    assert _run_json(second)["resources"] == [[str(resource), str(stored)]]


def test_artifacts_are_copied_and_named_in_run_json(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00\x01weights")
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    _start(observer, sources)
    observer.artifact_event(name="model.bin", filename=str(model))
    observer.artifact_event(
        name="figures/loss.png", filename=str(plot), metadata={"k": 1}, content_type="image/png"
    )
    observer.artifact_event(name="model.bin", filename=str(model))  # re-added: listed once
    run_dir = basedir / "1"
    assert (run_dir / "model.bin").read_bytes() == b"\x00\x01weights"
    assert (run_dir / "figures" / "loss.png").read_bytes() == b"png"
    assert _read(run_dir / "run.json")["artifacts"] == ["model.bin", "figures/loss.png"]


def test_copy_artifacts_false_records_the_name_only(
    basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    observer = FileStorageObserver(basedir, copy_artifacts=False)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    _start(observer, sources)
    observer.artifact_event(name="model.bin", filename=str(artifact))
    assert not (basedir / "1" / "model.bin").exists()
    assert _run_json(observer)["artifacts"] == ["model.bin"]


def test_copy_artifacts_false_records_a_resource_inside_basedir_in_place(
    basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    """Sacred's ``find_or_save``: a resource below ``basedir`` is not copied when
    ``copy_artifacts`` is off; one outside it still is."""
    observer = FileStorageObserver(basedir, copy_artifacts=False)
    _start(observer, sources)
    inside = basedir / "data" / "inside.csv"
    inside.parent.mkdir()
    inside.write_text("1,2\n")
    outside = tmp_path / "outside.csv"
    outside.write_text("3,4\n")
    observer.resource_event(filename=str(inside))
    observer.resource_event(filename=str(outside))
    stored = basedir / "_resources" / f"outside_{_md5(outside)}.csv"
    assert _run_json(observer)["resources"] == [
        [str(inside), str(inside)],
        [str(outside), str(stored)],
    ]
    assert os.listdir(basedir / "_resources") == [stored.name]


def test_create_is_sacreds_deprecated_constructor(basedir: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"FileStorageObserver\.create\(\.\.\.\) is deprecated"):
        observer = FileStorageObserver.create(basedir, priority=3)
    assert observer.basedir == str(basedir) and observer.priority == 3


def test_observers_on_one_basedir_compare_and_hash_equal(basedir: Path, tmp_path: Path) -> None:
    """Sacred compares by ``basedir``: "is this observer attached already" checks keep working."""
    first, second = FileStorageObserver(basedir), FileStorageObserver(str(basedir), priority=1)
    assert first == second and hash(first) == hash(second)
    assert not first != second  # noqa: SIM202 (Sacred's tests check __ne__ too)
    assert second in [first] and len({first, second}) == 1
    assert first != FileStorageObserver(tmp_path / "other") and first != "foo"


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "../../x",
        "sub/../../x",
        "ABSOLUTE",
        "run.json",
        "cout.txt",
        "metrics.json",
        "config.json",
        "info.json",
        "./run.json",
        "sub/../info.json",
        file_storage.METRICS_JOURNAL,
        "",
        ".",
    ],
)
def test_refused_artifact_names_write_nothing(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], tmp_path: Path, name: str
) -> None:
    artifact = tmp_path / "evil.txt"
    artifact.write_text("overwritten!")
    if name == "ABSOLUTE":
        name = str(tmp_path / "absolute.txt")
    _start(observer, sources)
    observer.heartbeat_event(info={"k": 1}, captured_out="out\n", beat_time=T2, result=None)
    observer.log_metrics(metrics_by_name={}, info={})
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    with pytest.raises(InvalidArtifactName):
        observer.artifact_event(name=name, filename=str(artifact))

    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before
    assert _run_json(observer)["artifacts"] == []


def test_a_symlinked_subdirectory_cannot_smuggle_an_artifact_out(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    artifact = tmp_path / "evil.txt"
    artifact.write_text("x")
    _start(observer, sources)
    (basedir / "1" / "link").symlink_to(outside)
    with pytest.raises(InvalidArtifactName):
        observer.artifact_event(name="link/x.txt", filename=str(artifact))
    assert list(outside.iterdir()) == []


# --- atomic writes --------------------------------------------------------------------------


def _started_with_history(observer: FileStorageObserver, sources: dict[str, Any]) -> Path:
    _start(observer, sources)
    observer.log_metrics(metrics_by_name=_batch("loss", range(5)), info={})
    observer.heartbeat_event(info={"v": 1}, captured_out="before\n", beat_time=T2, result=1)
    assert observer.dir is not None
    return Path(observer.dir)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}


def test_a_crash_while_writing_leaves_the_old_file_intact_and_no_temporary_files(
    observer: FileStorageObserver, sources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _started_with_history(observer, sources)
    before = _snapshot(run_dir)
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of the text, then dies like a process that is killed mid-write."""

        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.stream.close()

        def write(self, text: str) -> int:
            self.stream.write(text[: len(text) // 2])
            self.stream.flush()
            raise OSError("disk on fire")

    monkeypatch.setattr(file_storage.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="disk on fire"):
        observer.heartbeat_event(info={"v": 2}, captured_out="before\n", beat_time=T3, result=2)
    with pytest.raises(OSError, match="disk on fire"):
        observer.completed_event(stop_time=T3, result=2)
    assert _snapshot(run_dir) == before
    assert all(json.loads(content) is not None for name, content in before.items() if name.endswith(".json"))


def test_a_crash_before_the_rename_leaves_the_old_file_intact(
    observer: FileStorageObserver, sources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _started_with_history(observer, sources)
    before = _snapshot(run_dir)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # BaseException: the temporary file must still be removed

    monkeypatch.setattr(file_storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        observer.failed_event(fail_time=T3, fail_trace=["x\n"])
    assert _snapshot(run_dir) == before


def test_written_files_are_readable_like_sacreds(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    """Atomic writes must not make the files private (``mkstemp`` creates them 0600)."""
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"w")
    _start(observer, sources)
    observer.artifact_event(name="model.bin", filename=str(artifact))
    observer.log_metrics(metrics_by_name=_batch("loss", range(2)), info={})
    observer.heartbeat_event(info={"a": 1}, captured_out="x", beat_time=T2, result=None)
    observer.completed_event(stop_time=T3, result=None)
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    written = [path for path in basedir.rglob("*") if path.is_file()]
    assert {path.name for path in written} >= {
        "run.json",
        "config.json",
        "metrics.json",
        "info.json",
        "cout.txt",
        "model.bin",
    }
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- captured output through filters --------------------------------------------------------


def test_a_rewriting_filter_still_leaves_cout_equal_to_captured_out(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    run_dir = basedir / "1"
    raw = ""
    chunks = ["epoch 1\n", "progress 1", "\rprogress 2\r", "progress 3\n", "done\n"]
    for chunk in chunks:
        raw += chunk
        captured = apply_backspaces_and_linefeeds(raw)
        observer.heartbeat_event(info={}, captured_out=captured, beat_time=T2, result=None)
        assert _cout(run_dir) == captured
    # Output that shrinks: a filter that keeps only the last line.
    for captured in ["done\n", "short", "a whole new text\n"]:
        observer.heartbeat_event(info={}, captured_out=captured, beat_time=T2, result=None)
        assert _cout(run_dir) == captured


def test_a_filter_rewriting_far_back_in_a_long_line_is_not_missed(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    """A ``\\r`` after a 10,000-character line rewrites its start; length and tail stay the same."""
    _start(observer, sources)
    run_dir = basedir / "1"
    raw = "a" * 10_000
    observer.heartbeat_event(
        info={}, captured_out=apply_backspaces_and_linefeeds(raw), beat_time=T2, result=None
    )
    raw += "\rZ"
    captured = apply_backspaces_and_linefeeds(raw)
    assert captured == "Z" + "a" * 9_999
    observer.heartbeat_event(info={}, captured_out=captured, beat_time=T2, result=None)
    assert _cout(run_dir) == captured


def test_non_ascii_output_is_stored_as_utf8(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    captured = "température: 21°C ✓\n"
    observer.heartbeat_event(info={}, captured_out=captured, beat_time=T2, result=None)
    observer.heartbeat_event(info={}, captured_out=captured + "日本\n", beat_time=T2, result=None)
    assert (basedir / "1" / "cout.txt").read_bytes() == (captured + "日本\n").encode("utf-8")


# --- captured output as deltas ----------------------------------------------------------------


def test_a_beat_with_an_output_delta_appends_only_the_delta(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    """The delta is trusted: what ``captured_out`` begins with is not compared."""
    _start(observer, sources)
    observer.heartbeat_event(
        info={}, captured_out="one\n", beat_time=T2, result=None, output_delta=OutputDelta(0, "one\n")
    )
    observer.heartbeat_event(
        info={}, captured_out="ONE\ntwo\n", beat_time=T2, result=None, output_delta=OutputDelta(4, "two\n")
    )
    assert _cout(basedir / "1") == "one\n" + "two\n"
    observer.heartbeat_event(
        info={}, captured_out="ONE\ntwo\n", beat_time=T3, result=None, output_delta=OutputDelta(8, "")
    )
    assert _cout(basedir / "1") == "one\ntwo\n"


def test_a_delta_that_does_not_continue_the_stored_output_writes_it_whole(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.heartbeat_event(
        info={},
        captured_out="one\ntwo\n",
        beat_time=T2,
        result=None,
        output_delta=OutputDelta(0, "one\ntwo\n"),
    )
    # A filter rewrote the end (start < stored), or a beat was missed (start > stored).
    for captured, delta in [
        ("one\n2\n", OutputDelta(4, "2\n")),
        ("one\n2\nlost\n3\n", OutputDelta(11, "3\n")),
    ]:
        observer.heartbeat_event(
            info={}, captured_out=captured, beat_time=T2, result=None, output_delta=delta
        )
        assert _cout(basedir / "1") == captured


def test_a_sacred_style_beat_without_a_delta_stores_the_whole_output(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.heartbeat_event(
        info={}, captured_out="one\n", beat_time=T2, result=None, output_delta=OutputDelta(0, "one\n")
    )
    observer.heartbeat_event(info={}, captured_out="other\n", beat_time=T2, result=None)
    assert _cout(basedir / "1") == "other\n"
    observer.heartbeat_event(
        info={},
        captured_out="other\nmore\n",
        beat_time=T2,
        result=None,
        output_delta=OutputDelta(6, "more\n"),
    )
    assert _cout(basedir / "1") == "other\nmore\n"


def test_a_failed_append_is_caught_up_by_writing_the_output_whole(
    observer: FileStorageObserver,
    basedir: Path,
    sources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _start(observer, sources)
    observer.heartbeat_event(
        info={}, captured_out="one\n", beat_time=T2, result=None, output_delta=OutputDelta(0, "one\n")
    )
    monkeypatch.setattr(files, "_append", _fail)
    with pytest.raises(OSError, match="disk full"):
        observer.heartbeat_event(
            info={},
            captured_out="one\ntwo\n",
            beat_time=T2,
            result=None,
            output_delta=OutputDelta(4, "two\n"),
        )
    monkeypatch.undo()
    observer.heartbeat_event(
        info={},
        captured_out="one\ntwo\nthree\n",
        beat_time=T2,
        result=None,
        output_delta=OutputDelta(8, "three\n"),
    )
    assert _cout(basedir / "1") == "one\ntwo\nthree\n"


def _fail(*args: Any) -> None:
    raise OSError("disk full")


def test_the_observer_keeps_no_reference_to_captured_out(
    observer: FileStorageObserver, sources: dict[str, Any]
) -> None:
    """A reference kept past the call would make the run copy its whole output at every beat."""
    _start(observer, sources)
    captured = "".join(["out", "put\n"])  # fresh strings, referenced only here
    more = captured + "more\n"
    for text, delta in [(captured, None), (more, OutputDelta(len(captured), "more\n"))]:
        before = sys.getrefcount(text)
        observer.heartbeat_event(info={}, captured_out=text, beat_time=T2, result=None, output_delta=delta)
        assert sys.getrefcount(text) == before


# --- template report ------------------------------------------------------------------------

TEMPLATE = (
    "<h1>${run['experiment']['name']} ${run['status']}</h1>\n"
    "<p>a=${config['a']}</p>\n<p>info=${info['score']}</p>\n<pre>${cout}</pre>\n"
    "<p>${savedir}</p>\n"
)


@pytest.mark.parametrize("kind", [str, Path])
def test_a_mako_template_renders_the_report(
    basedir: Path, sources: dict[str, Any], tmp_path: Path, kind: type
) -> None:
    template = tmp_path / "report_template.html"
    template.write_text(TEMPLATE)
    observer = FileStorageObserver(basedir, template=kind(template))
    _start(observer, sources)
    observer.heartbeat_event(info={"score": 0.75}, captured_out="hello", beat_time=T2, result=None)
    observer.completed_event(stop_time=T3, result=None)
    report = (basedir / "1" / "report.html").read_text()
    assert report == (
        f"<h1>exp COMPLETED</h1>\n<p>a=1</p>\n<p>info=0.75</p>\n<pre>hello</pre>\n<p>{basedir / '1'}</p>\n"
    )


def test_the_default_template_in_basedir_is_used(basedir: Path, sources: dict[str, Any]) -> None:
    basedir.mkdir()
    (basedir / "template.html").write_text("${run['status']} ${len(cout)}")
    observer = FileStorageObserver(basedir)
    _start(observer, sources)
    observer.heartbeat_event(info={}, captured_out="12345", beat_time=T2, result=None)
    observer.failed_event(fail_time=T3, fail_trace=["boom\n"])
    assert (basedir / "1" / "report.html").read_text() == "FAILED 5"


def test_the_report_name_is_refused_as_an_artifact_when_a_template_is_set(
    basedir: Path, sources: dict[str, Any], tmp_path: Path
) -> None:
    template = tmp_path / "t.md"
    template.write_text("${run['status']}")
    artifact = tmp_path / "x.md"
    artifact.write_text("x")
    observer = FileStorageObserver(basedir, template=template)
    _start(observer, sources)
    with pytest.raises(InvalidArtifactName):
        observer.artifact_event(name="report.md", filename=str(artifact))
    observer.interrupted_event(interrupt_time=T3, status="INTERRUPTED")
    assert (basedir / "1" / "report.md").read_text() == "INTERRUPTED"


# --- reattach (final events sent from another process) --------------------------------------


def test_reattach_rebuilds_metrics_from_the_journal_and_finishes_the_run(
    basedir: Path, sources: dict[str, Any]
) -> None:
    original = FileStorageObserver(basedir)
    _start(original, sources)
    for beat in range(10):
        steps = range(beat * 100, (beat + 1) * 100)
        original.log_metrics(metrics_by_name=_batch("loss", steps), info={})
        original.heartbeat_event(
            info={"beat": beat}, captured_out=f"out {beat}\n" * (beat + 1), beat_time=T2, result=None
        )
    run_dir = basedir / "1"
    # The process is SIGKILLed: metrics.json lags behind, the journal has everything.
    assert (run_dir / file_storage.METRICS_JOURNAL).exists()
    with open(run_dir / file_storage.METRICS_JOURNAL, "a") as journal:
        journal.write('{"name": "loss", "steps": [99')  # a line cut short by the kill

    reattached = FileStorageObserver(basedir)
    assert reattached.reattach("1") is True
    trace = ["Traceback (most recent call last):\n", "SystemExit: killed\n"]
    reattached.failed_event(fail_time=T3, fail_trace=trace)

    run = _read(run_dir / "run.json")
    assert set(run) == RUN_JSON_STARTED_KEYS | {"result", "stop_time", "fail_trace"}
    assert run["status"] == "FAILED"
    assert run["fail_trace"] == trace
    assert run["heartbeat"] == "1999-05-05T05:05:05.012345"
    metrics = _read(run_dir / "metrics.json")
    assert metrics["loss"]["steps"] == list(range(1000))
    assert metrics["loss"]["timestamps"] == _expected_timestamps(range(1000))
    assert not (run_dir / file_storage.METRICS_JOURNAL).exists()
    assert _cout(run_dir) == "out 9\n" * 10


def test_reattach_refuses_finished_and_unknown_runs(
    observer: FileStorageObserver, basedir: Path, sources: dict[str, Any]
) -> None:
    _start(observer, sources)
    observer.completed_event(stop_time=T3, result=None)
    before = _snapshot(basedir / "1")
    other = FileStorageObserver(basedir)
    assert other.reattach("1") is False
    assert other.reattach("404") is False
    assert _snapshot(basedir / "1") == before


def test_a_large_history_is_not_rewritten_on_every_beat(
    observer: FileStorageObserver,
    basedir: Path,
    sources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rewrites of metrics.json are geometric once they are not cheap: O(new points) per beat."""
    monkeypatch.setattr(RewriteSchedule, "cheap_seconds", 0.0)  # every rewrite is "costly"
    rewrites = []
    real_write = observer._write_metrics_json

    def counting_write() -> None:
        rewrites.append(observer._points)
        real_write()

    monkeypatch.setattr(observer, "_write_metrics_json", counting_write)
    _start(observer, sources)
    beats, per_beat = 300, 100
    for beat in range(beats):
        observer.log_metrics(
            metrics_by_name=_batch("loss", range(beat * per_beat, (beat + 1) * per_beat)), info={}
        )
        stored = len(_read(basedir / "1" / "metrics.json")["loss"]["values"])
        assert stored * (1 + RewriteSchedule.growth) >= (beat + 1) * per_beat  # lag <= 20%
    assert len(rewrites) <= 30  # log base 1.25 of 300 beats is 25.6
    observer.completed_event(stop_time=T3, result=None)
    assert len(_read(basedir / "1" / "metrics.json")["loss"]["values"]) == beats * per_beat
