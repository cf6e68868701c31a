"""``prefect_sacred.testing`` as a user meets it: a hand-written observer passing the contract
suite, and the doubles (``InMemoryObserver``, ``capture_runs``)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.observers.base import InvalidArtifactName, OutputDelta, RunObserver
from prefect_sacred.testing import InMemoryObserver, ObserverContractSuite, RunRecord, capture_runs

REPO = Path(__file__).resolve().parent.parent


class JsonDirObserver(RunObserver):
    """A user's observer: each run is ``<root>/<id>.json``, rewritten whole on every event."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id) -> Any:
        self.root.mkdir(parents=True, exist_ok=True)
        if _id is None:  # claim the next free number, safely against copies in other threads
            _id = 1
            while not _claim(self.root / f"{_id}.json"):
                _id += 1
        self._id = _id  # per-run state: assigned afresh here, never shared with a copy
        self._run: dict[str, Any] = {"_id": _id, "status": "RUNNING", "config": config, "meta": meta_info}
        self._run.update(start_time=start_time.isoformat(), info={}, metrics={}, artifacts={}, resources=[])
        self._save()
        return _id

    def heartbeat_event(self, info, captured_out, beat_time, result) -> None:
        self._run.update(info=dict(info), captured_out=captured_out, heartbeat=beat_time.isoformat())
        self._run["result"] = result
        self._save()

    def log_metrics(self, metrics_by_name, info) -> None:
        for name, metric in metrics_by_name.items():
            stored = self._run["metrics"].setdefault(name, {"steps": [], "values": []})
            stored["steps"] += metric["steps"]
            stored["values"] += metric["values"]

    def _end(self, status: str, when: dt.datetime, **fields: Any) -> None:
        self._run.update(status=status, stop_time=when.isoformat(), **fields)
        self._save()

    def completed_event(self, stop_time, result) -> None:
        self._end("COMPLETED", stop_time, result=result)

    def interrupted_event(self, interrupt_time, status) -> None:
        self._end(status, interrupt_time)

    def failed_event(self, fail_time, fail_trace) -> None:
        self._end("FAILED", fail_time, fail_trace=fail_trace)

    def resource_event(self, filename) -> None:
        self._run["resources"].append(os.path.basename(filename))

    def artifact_event(self, name, filename, metadata=None, content_type=None) -> None:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise InvalidArtifactName(f"artifact name {name!r} is not a plain file name")
        self._run["artifacts"][name] = base64.b64encode(Path(filename).read_bytes()).decode()
        self._save()

    def _save(self) -> None:
        path = self.root / f"{self._id}.json"
        text = json.dumps(self._run, default=_jsonable)
        Path(f"{path}.tmp").write_text(text)
        os.replace(f"{path}.tmp", path)  # readers never see half a file


def _jsonable(value: Any) -> Any:
    """numpy values as lists and numbers, anything else JSON cannot express as its repr."""
    return value.tolist() if hasattr(value, "tolist") else repr(value)


def _claim(path: Path) -> bool:
    try:
        path.open("x").close()
        return True
    except FileExistsError:
        return False


def read_json_run(root: Path, run_id: Any) -> RunRecord:
    stored = json.loads((root / f"{run_id}.json").read_text())
    times = {
        key: dt.datetime.fromisoformat(stored[key]) if stored.get(key) else None
        for key in ("heartbeat", "start_time", "stop_time")
    }
    return RunRecord(
        status=stored["status"],
        config=stored["config"],
        info=stored["info"],
        result=stored.get("result"),
        captured_out=stored.get("captured_out", ""),
        fail_trace=stored.get("fail_trace"),
        metrics=stored["metrics"],
        artifacts={name: base64.b64decode(data) for name, data in stored["artifacts"].items()},
        resources=stored["resources"],
        meta=stored["meta"],
        **times,
    )


class TestUserObserver(ObserverContractSuite):
    """The contract suite as a user runs it: no flags, no URL, so the process scenarios skip."""

    @pytest.fixture(autouse=True)
    def _storage(self, tmp_path: Path) -> None:
        self.root = tmp_path / "json_runs"

    def observer(self) -> JsonDirObserver:
        return JsonDirObserver(self.root)

    def read_run(self, run_id: Any) -> RunRecord:
        return read_json_run(self.root, run_id)


def test_the_process_scenarios_of_an_observer_without_flags_or_url_are_skipped(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{Path(__file__).relative_to(REPO)}::TestUserObserver",
            "-k",
            "sigterm or served",
            "--noconftest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cases = {case.get("name"): case for case in ET.parse(report).iter("testcase")}
    assert set(cases) == {
        "test_sigterm_or_ctrl_c_of_a_command_line_run_is_recorded_as_interrupted[sigterm]",
        "test_sigterm_or_ctrl_c_of_a_command_line_run_is_recorded_as_interrupted[sigint]",
        "test_a_served_run_cancelled_or_killed_is_recorded_by_the_serve_process",
        "test_a_served_run_killed_mid_epoch_keeps_what_it_logged_until_a_second_before",
    }
    for name, case in cases.items():
        skipped = case.find("skipped")
        assert skipped is not None, f"{name} was not skipped"
        hook = "observer_url" if "served" in name else "observer_flags"
        assert f"TestUserObserver.{hook}() is None" in skipped.get("message", "")


# --- the doubles ----------------------------------------------------------------------------

NOW = dt.datetime(2024, 1, 2, 3, 4, 5)
STARTED = {
    "ex_info": {"name": "ex"},
    "command": "main",
    "host_info": {"hostname": "h"},
    "start_time": NOW,
    "config": {"seed": 1},
    "meta_info": {"command": "main"},
    "_id": None,
}


def test_in_memory_observer_records_every_call_with_all_its_arguments(tmp_path: Path) -> None:
    observer = InMemoryObserver()
    observer.started_event(**STARTED)
    info = {"epoch": 1}
    observer.log_metrics(
        metrics_by_name={"loss": {"steps": [0], "values": [1.0], "timestamps": [NOW]}}, info=info
    )
    observer.heartbeat_event(info=info, captured_out="a", beat_time=NOW, result=None)
    observer.heartbeat_event(
        info=info, captured_out="ab", beat_time=NOW, result=2, output_delta=OutputDelta(1, "b")
    )
    info["epoch"] = 2  # the run's live dict changes after the calls
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"w")
    observer.artifact_event(name="model.bin", filename=str(artifact), metadata={"k": 1}, content_type="x/y")
    observer.completed_event(stop_time=NOW, result=2)
    observer.join()

    assert observer.events == [
        ("started_event", STARTED),
        (
            "log_metrics",
            {
                "metrics_by_name": {"loss": {"steps": [0], "values": [1.0], "timestamps": [NOW]}},
                "info": {"epoch": 1},
            },
        ),
        ("heartbeat_event", {"info": {"epoch": 1}, "captured_out": "a", "beat_time": NOW, "result": None}),
        (
            "heartbeat_event",
            {
                "info": {"epoch": 1},
                "captured_out": "ab",
                "beat_time": NOW,
                "result": 2,
                "output_delta": OutputDelta(1, "b"),
            },
        ),
        (
            "artifact_event",
            {"name": "model.bin", "filename": str(artifact), "metadata": {"k": 1}, "content_type": "x/y"},
        ),
        ("completed_event", {"stop_time": NOW, "result": 2}),
        ("join", {}),
    ]
    assert observer.run["artifacts"][0]["content"] == b"w"


def test_a_real_run_gives_the_in_memory_observer_every_argument() -> None:
    from prefect_sacred import Experiment

    ex = Experiment("kwargs")
    observer = InMemoryObserver()
    ex.observers.append(observer)

    @ex.main
    def main(_run: Any = None) -> int:
        _run.log_scalar("loss", 0.5)
        print("hello")
        return 1

    ex.run(options={"--beat-interval": 60})
    events = dict(observer.events)  # one of each here
    assert set(events["started_event"]) == set(STARTED)
    assert events["started_event"]["config"]["seed"] == observer.run["config"]["seed"]
    assert set(events["log_metrics"]) == {"metrics_by_name", "info"}
    assert events["log_metrics"]["metrics_by_name"]["loss"]["values"] == [0.5]
    assert set(events["heartbeat_event"]) - {"output_delta"} == {
        "info",
        "captured_out",
        "beat_time",
        "result",
    }
    assert "hello" in events["heartbeat_event"]["captured_out"]
    if "output_delta" in events["heartbeat_event"]:  # the run gives it to observers declaring it
        assert isinstance(events["heartbeat_event"]["output_delta"], OutputDelta)
    assert events["completed_event"]["result"] == 1


def test_each_in_memory_observer_counts_its_own_ids_and_shares_them_with_its_copies() -> None:
    first, second = InMemoryObserver(), InMemoryObserver()
    assert first.started_event(**STARTED) == 1
    assert second.started_event(**STARTED) == 1  # no counter shared by every instance
    overlapping = copy.copy(first)  # what a run gets while ``first`` is busy
    assert overlapping.started_event(**STARTED) == 2
    assert first.started_event(**STARTED) == 3
    assert [run["_id"] for run in first.runs] == [1, 2, 3] == [run["_id"] for run in overlapping.runs]
    assert first.started_event(**{**STARTED, "_id": "given"}) == "given"
    assert InMemoryObserver().started_event(**STARTED) == 1
    shipped = pickle.loads(pickle.dumps(first))  # as serve ships observers to flow-run processes
    assert shipped.started_event(**STARTED) == 4
    assert len(shipped.runs) == 5 and len(first.runs) == 4


def test_capture_runs_records_every_run_started_in_the_block(tmp_path: Path) -> None:
    from prefect_sacred import Experiment, FileStorageObserver

    plain = Experiment("plain")
    stored = Experiment("stored")
    stored.observers.append(FileStorageObserver(tmp_path / "runs"))

    @plain.main
    def plain_main(x: int = 1) -> int:
        return x

    @stored.main
    def stored_main() -> str:
        return "stored"

    with capture_runs() as observer:
        plain.run(config_updates={"x": 5})
        run = stored.run()
    plain.run()  # after the block: not captured
    assert [r["result"] for r in observer.runs] == [5, "stored"]
    assert [r["status"] for r in observer.runs] == ["COMPLETED", "COMPLETED"]
    assert observer.runs[0]["_id"] == 1  # the only observer gives the id
    assert observer.runs[1]["_id"] == run._id  # the experiment's own observer gives the id
    assert (tmp_path / "runs" / str(run._id) / "run.json").exists()
    assert [name for name, _ in observer.events].count("started_event") == 2


def test_importing_prefect_sacred_testing_loads_neither_prefect_nor_pytest() -> None:
    code = (
        "import sys, prefect_sacred.testing as t; t.InMemoryObserver(); t.RunRecord; "
        "print(sorted(m for m in ('prefect', 'pytest', 'prefect_sacred.flows') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
