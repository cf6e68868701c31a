"""TinyDbObserver and TinyDbReader: Sacred's layout and tags, the report text, numpy/pandas,
queued runs, metrics, and several processes writing into one directory."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tinydb import Query

from prefect_sacred import OutputDelta, TinyDbObserver, TinyDbReader
from prefect_sacred.observers.registry import observer_from_url
from tests.support import PYTHON, subprocess_env

T1 = dt.datetime(2016, 11, 12, 1, 18, 0, 197311)
T2 = dt.datetime(2016, 11, 12, 1, 18, 0, 337519)
HOST = {
    "hostname": "phoebe",
    "cpu": "cpu",
    "os": ["Darwin", "Darwin-15"],
    "python_version": "3.5.2",
}


def ex_info(base: Path, name: str = "iris_rbf_svm") -> dict[str, Any]:
    (base / "test_exp.py").write_text("print('exp')\n")
    md5 = hashlib.md5((base / "test_exp.py").read_bytes()).hexdigest()
    return {
        "name": name,
        "base_dir": str(base),
        "sources": [["test_exp.py", md5]],
        "dependencies": ["IPython==5.1.0", "numpy==1.11.2"],
        "repositories": [],
    }


def run_once(
    root: Path,
    base: Path,
    name: str = "iris_rbf_svm",
    result: Any = 0.9666666666666667,
    config: dict[str, Any] | None = None,
) -> Any:
    observer = TinyDbObserver(root)
    _id = observer.started_event(
        ex_info=ex_info(base, name),
        command="run",
        host_info=HOST,
        start_time=T1,
        config=config if config is not None else {"C": 1.0, "gamma": 0.7, "seed": 816200523},
        meta_info={},
        _id=None,
    )
    observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)
    observer.completed_event(stop_time=T2 + dt.timedelta(seconds=0.06), result=result)
    return _id


def test_layout_record_and_tags_match_sacreds(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "runs_db"
    _id = run_once(root, tmp_path)
    stored = json.loads((root / "metadata.json").read_text())
    record = stored["runs"]["1"]
    md5 = hashlib.md5(b"print('exp')\n").hexdigest()
    assert record["_id"] == _id and len(_id) == 32
    assert record["format"] == "TinyDbObserver-0.8.7"
    assert record["start_time"] == "{TinyDate}:2016-11-12T01:18:00.197311"
    assert record["heartbeat"] == "{TinyDate}:2016-11-12T01:18:00.337519"
    assert record["experiment"]["sources"] == [["test_exp.py", md5, f'{{TinyFile}}:"{md5}"']]
    assert set(record) == {
        "_id",
        "experiment",
        "format",
        "command",
        "host",
        "start_time",
        "config",
        "meta",
        "status",
        "resources",
        "artifacts",
        "captured_out",
        "info",
        "heartbeat",
        "result",
        "stop_time",
    }
    assert (root / "hashfs" / md5[:2] / md5[2:4] / md5[4:6] / md5[6:]).read_bytes() == b"print('exp')\n"


def test_report_text_is_sacreds(tmp_path: Path) -> None:
    root = tmp_path / "runs_db"
    _id = run_once(root, tmp_path)
    observer = TinyDbObserver(root)
    assert TinyDbReader(root).fetch_report(indices=-1) == [
        textwrap.dedent(f"""
        -------------------------------------------------
        Experiment: iris_rbf_svm
        -------------------------------------------------
        ID: {_id}
        Date: Sat 12 Nov 2016    Duration: 00:00:00.2

        Parameters:
            C: 1.0
            gamma: 0.7
            seed: 816200523

        Result:
            0.9666666666666667

        Dependencies:
            IPython==5.1.0
            numpy==1.11.2

        Resources:
            None

        Source Files:
            test_exp.py

        Outputs:
            None
        """)
    ]
    assert observer.root == str(root)


def test_reader_selects_by_index_name_regex_and_query(tmp_path: Path) -> None:
    root = tmp_path / "runs_db"
    ids = [
        run_once(root, tmp_path, name=name, result=i) for i, name in enumerate(["alpha_1", "beta", "alpha_2"])
    ]
    reader = TinyDbReader(root)
    assert [r["_id"] for r in reader.fetch_metadata(indices=0)] == [ids[0]]
    assert [r["_id"] for r in reader.fetch_metadata(indices=[-1, 1])] == [ids[2], ids[1]]
    assert [r["_id"] for r in reader.fetch_metadata(exp_name="alpha")] == [ids[0], ids[2]]
    assert [r["_id"] for r in reader.fetch_metadata(exp_name="^al.*2$")] == [ids[2]]
    assert [r["_id"] for r in reader.fetch_metadata(query=Query().result == 1)] == [ids[1]]
    assert len(reader.search(Query().experiment.name.search("a"))) == 3
    with pytest.raises(ValueError):
        reader.fetch_metadata(indices=3)
    with pytest.raises(ValueError):
        reader.fetch_metadata()
    files = reader.fetch_files(indices=0)[0]
    assert files["exp_id"] == ids[0] and files["date"] == T1 and "resources" not in files
    with files["sources"]["test_exp.py"] as handle:
        assert handle.read() == b"print('exp')\n"
    with pytest.raises(OSError):
        TinyDbReader(tmp_path / "missing")


def test_numpy_and_pandas_values_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "runs_db"
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    run_once(
        root,
        tmp_path,
        config={"weights": np.arange(4), "frame": frame, "lr": np.float32(0.5)},
        result=pd.Series([1.0, 2.0]),
    )
    record = TinyDbReader(root).fetch_metadata(indices=0)[0]
    np.testing.assert_array_equal(record["config"]["weights"], np.arange(4))
    pd.testing.assert_frame_equal(record["config"]["frame"], frame)
    pd.testing.assert_series_equal(record["result"], pd.Series([1.0, 2.0]))
    assert record["config"]["lr"] == 0.5


def test_queued_run_starts_under_its_id_and_metrics_and_files_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "runs_db"
    queued = TinyDbObserver(root).queued_event(
        ex_info=ex_info(tmp_path),
        command="run",
        host_info=HOST,
        queue_time=T1,
        config={},
        meta_info={},
        _id=None,
    )
    assert TinyDbReader(root).fetch_metadata(indices=0)[0]["status"] == "QUEUED"
    observer = TinyDbObserver(root)
    assert (
        observer.started_event(
            ex_info=ex_info(tmp_path),
            command="run",
            host_info=HOST,
            start_time=T2,
            config={},
            meta_info={},
            _id=queued,
        )
        == queued
    )
    observer.log_metrics({"loss": {"steps": [0, 1], "values": [1.0, 0.5], "timestamps": [T1, T2]}}, {})
    observer.log_metrics({"loss": {"steps": [2], "values": [0.25], "timestamps": [T2]}}, {})
    data = tmp_path / "data.csv"
    data.write_text("a\n")
    observer.resource_event(filename=str(data))
    observer.artifact_event(name="out.csv", filename=str(data))
    observer.interrupted_event(interrupt_time=T2, status="INTERRUPTED")
    reader = TinyDbReader(root)
    (record,) = reader.fetch_metadata(indices=[0])
    assert record["status"] == "INTERRUPTED" and len(reader.runs) == 1
    assert reader.fetch_metrics(indices=0)[0]["loss"]["steps"] == [0, 1, 2]
    assert reader.fetch_metrics(indices=0)[0]["loss"]["timestamps"][1] == T2
    assert [entry[0] for entry in record["artifacts"]] == ["out.csv"]
    assert TinyDbObserver(root).reattach(queued) is False


def _write_runs(root: str, base: str, count: int) -> None:
    for _ in range(count):
        run_once(Path(root), Path(base))


def test_processes_writing_into_one_directory_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs_db"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_runs, args=(str(root), str(tmp_path), 8)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    records = TinyDbReader(root).search(Query().status == "COMPLETED")
    assert len(records) == 32 and len({record["_id"] for record in records}) == 32


def test_url_scheme_and_location(tmp_path: Path) -> None:
    observer = observer_from_url(f"tinydb://{tmp_path / 'db'}")
    assert isinstance(observer, TinyDbObserver)
    _id = observer.started_event(
        ex_info=ex_info(tmp_path),
        command="run",
        host_info=HOST,
        start_time=T1,
        config={},
        meta_info={},
        _id="given",
    )
    assert _id == "given"
    assert observer.run_location() == f"{tmp_path / 'db' / 'metadata.json'}#run=given"


@pytest.mark.slow
def test_command_line_run_with_the_tinydb_flag(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent("""
        import numpy as np
        from prefect_sacred import Experiment
        ex = Experiment("cli_tiny")

        @ex.automain
        def main(lr: float = 0.1, _run=None):
            _run.info["weights"] = np.ones(2)
            _run.log_scalar("loss", 0.5)
            return np.float64(lr)
    """)
    )
    done = subprocess.run(
        [PYTHON, str(script), "-t", str(tmp_path / "tiny" / "db"), "-b", "0.2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    reader = TinyDbReader(tmp_path / "tiny" / "db")
    record = reader.fetch_metadata(indices=-1)[0]
    assert record["status"] == "COMPLETED" and record["result"] == 0.1
    np.testing.assert_array_equal(record["info"]["weights"], np.ones(2))
    assert reader.fetch_metrics(indices=-1)[0]["loss"]["values"] == [0.5]


def test_metadata_is_readable_like_a_plainly_written_file(tmp_path: Path) -> None:
    import os

    (tmp_path / "src").mkdir()
    run_once(tmp_path / "db", tmp_path / "src")
    previous = os.umask(0o022)
    os.umask(previous)
    expected = 0o666 & ~previous
    assert (tmp_path / "db" / "metadata.json").stat().st_mode & 0o777 == expected
    assert not list((tmp_path / "db").glob(".*.tmp"))  # no temporary file left behind


# --- captured output as deltas ----------------------------------------------------------------


def start(observer: TinyDbObserver, base: Path, _id: Any = None) -> Any:
    return observer.started_event(
        ex_info=ex_info(base),
        command="run",
        host_info=HOST,
        start_time=T1,
        config={},
        meta_info={},
        _id=_id,
    )


def beat(observer: TinyDbObserver, captured_out: str, delta: OutputDelta | None = None) -> None:
    observer.heartbeat_event(
        info={}, captured_out=captured_out, beat_time=T2, result=None, output_delta=delta
    )


def stored_output(root: Path) -> str:
    """The whole output, as our reader gives it (from the output file while the run is live)."""
    output: str = TinyDbReader(root).fetch_metadata(indices=-1)[0]["captured_out"]
    return output


def raw_record(root: Path) -> dict[str, Any]:
    """The run's record as ``metadata.json`` holds it, for Sacred's readers."""
    record: dict[str, Any] = json.loads((root / "metadata.json").read_text())["runs"]["1"]
    return record


def test_a_beat_with_an_output_delta_appends_only_the_delta(tmp_path: Path) -> None:
    """The delta is trusted: what ``captured_out`` begins with is not compared."""
    root = tmp_path / "db"
    observer = TinyDbObserver(root)
    start(observer, tmp_path)
    beat(observer, "one\n", OutputDelta(0, "one\n"))
    beat(observer, "ONE\ntwo\n", OutputDelta(4, "two\n"))
    assert stored_output(root) == "one\n" + "two\n"
    observer.completed_event(stop_time=T2, result=None)
    assert raw_record(root)["captured_out"] == "one\ntwo\n"


def test_a_delta_that_does_not_continue_the_stored_output_writes_it_whole(tmp_path: Path) -> None:
    root = tmp_path / "db"
    observer = TinyDbObserver(root)
    start(observer, tmp_path)
    beat(observer, "one\ntwo\n", OutputDelta(0, "one\ntwo\n"))
    # A filter rewrote the end (start < stored), or a beat was missed (start > stored).
    for captured, delta in [
        ("one\n2\n", OutputDelta(4, "2\n")),
        ("one\n2\nlost\n3\n", OutputDelta(11, "3\n")),
    ]:
        beat(observer, captured, delta)
        assert stored_output(root) == captured


def test_a_sacred_style_beat_without_a_delta_stores_the_whole_output(tmp_path: Path) -> None:
    root = tmp_path / "db"
    observer = TinyDbObserver(root)
    start(observer, tmp_path)
    beat(observer, "one\n", OutputDelta(0, "one\n"))
    beat(observer, "other\n")
    assert stored_output(root) == "other\n"
    beat(observer, "other\nmore\n", OutputDelta(6, "more\n"))
    assert stored_output(root) == "other\nmore\n"
    observer.failed_event(fail_time=T2, fail_trace=["boom\n"])
    assert raw_record(root)["captured_out"] == "other\nmore\n"


def test_a_live_run_shows_the_last_output_and_the_reader_gives_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata.json is rewritten at every beat: while the run is live it holds a bounded tail,
    the whole output is in captured_out/<id>.txt, and the end of the run puts it all back."""
    monkeypatch.setattr(TinyDbObserver, "live_output_chars", 10)
    root = tmp_path / "db"
    observer = TinyDbObserver(root)
    _id = start(observer, tmp_path)
    captured = ""
    for line in ["first line\n", "second line\n", "third\n"]:
        beat(observer, captured + line, OutputDelta(len(captured), line))
        captured += line
        assert stored_output(root) == captured
    assert raw_record(root)["captured_out"] == (
        f"[19 earlier characters are in captured_out/{_id}.txt]\n" + "ine\nthird\n"
    )
    output_file = root / "captured_out" / f"{_id}.txt"
    assert output_file.read_text() == captured
    # A process that finishes the run it did not start (Prefect's crash and cancel hooks).
    reattached = TinyDbObserver(root)
    assert reattached.reattach(_id) is True
    reattached.interrupted_event(interrupt_time=T2, status="INTERRUPTED")
    assert raw_record(root)["captured_out"] == captured
    assert stored_output(root) == captured and not output_file.exists()


def test_the_observer_keeps_no_reference_to_captured_out(tmp_path: Path) -> None:
    """A reference kept past the call would make the run copy its whole output at every beat."""
    observer = TinyDbObserver(tmp_path / "db")
    start(observer, tmp_path)
    captured = "".join(["out", "put\n"])  # fresh strings, referenced only here
    more = captured + "more\n"
    for text, delta in [(captured, None), (more, OutputDelta(len(captured), "more\n"))]:
        before = sys.getrefcount(text)
        beat(observer, text, delta)
        assert sys.getrefcount(text) == before


def test_metrics_survive_a_journal_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "db"
    observer = TinyDbObserver(root)
    _id = start(observer, tmp_path)
    observer.log_metrics({"loss": {"steps": [0], "values": [1.0], "timestamps": [T1]}}, {})
    journal = root / "metrics" / f"{_id}.jsonl"
    assert json.loads(journal.read_text()) == {
        "name": "loss",
        "steps": [0],
        "values": [1.0],
        "timestamps": ["2016-11-12T01:18:00.197311"],
    }
    with open(journal, "a") as handle:
        handle.write('{"name": "loss", "steps": [9')  # the process was killed mid-line
    later = TinyDbObserver(root)
    assert later.reattach(_id) is True
    later.log_metrics({"loss": {"steps": [1], "values": [0.5], "timestamps": [T2]}}, {})
    metrics = TinyDbReader(root).fetch_metrics(indices=-1)[0]
    assert metrics == {"loss": {"steps": [0, 1], "values": [1.0, 0.5], "timestamps": [T1, T2]}}


def test_search_and_the_runs_table_give_files_as_sacreds_do(tmp_path: Path) -> None:
    """Sacred decodes ``{TinyFile}`` into open files: ``record["artifacts"][0][3].read()``.
    Ours are opened at their first use, so reading records opens no file."""
    import copy
    import io

    root = tmp_path / "runs_db"
    observer = TinyDbObserver(root)
    observer.started_event(
        ex_info=ex_info(tmp_path),
        command="run",
        host_info=HOST,
        start_time=T1,
        config={},
        meta_info={},
        _id=None,
    )
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n")
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00weights")
    observer.resource_event(filename=str(data))
    observer.artifact_event(name="model.bin", filename=str(model))
    assert len(observer.runs.search(Query().status == "RUNNING")) == 1
    observer.completed_event(stop_time=T2, result=None)
    assert observer.runs.search(Query().status == "RUNNING") == []  # no stale query cache
    md5 = hashlib.md5(b"\x00weights").hexdigest()

    reader = TinyDbReader(root)
    records = [reader.search(Query().status == "COMPLETED")[0] for _ in range(50)]
    # Nothing opened, nothing read (a count of the process's fds was flaky: other threads).
    assert all(entry[3].raw._file is None for record in records for entry in record["artifacts"])
    (record,) = records[:1]
    artifact = record["artifacts"][0][3]
    assert isinstance(artifact, io.BufferedReader) and artifact.hash == md5
    assert artifact.name.endswith(md5[6:]) and artifact.mode == "rb"
    with artifact:
        assert artifact.read() == b"\x00weights"
    assert artifact.closed
    source = record["experiment"]["sources"][0][2]
    assert isinstance(source, io.BufferedReader)
    with source, copy.deepcopy(record)["resources"][0][2] as resource:
        assert source.read() == b"print('exp')\n" and resource.read() == b"a,b\n"
    # The observer's own table decodes them the same way, and writing keeps Sacred's tags.
    stored = observer.runs.get(doc_id=1)
    with stored["artifacts"][0][3] as handle:
        assert handle.read() == b"\x00weights"
    TinyDbObserver(root).reattach(record["_id"])  # reads and leaves the file as it was
    text = (root / "metadata.json").read_text()
    assert f'{{TinyFile}}:\\"{md5}\\"' in text


def test_create_is_sacreds_deprecated_constructor(tmp_path: Path) -> None:
    message = "TinyDbObserver.create(...) is deprecated. Please use TinyDbObserver(...) instead."
    with pytest.warns(DeprecationWarning, match=re.escape(message)):
        observer = TinyDbObserver.create(path=str(tmp_path / "foo"))
    assert observer.root == str(tmp_path / "foo")
    with pytest.warns(DeprecationWarning):
        assert TinyDbObserver.create(tmp_path / "bar", None).root == str(tmp_path / "bar")


def test_observers_on_one_path_compare_and_hash_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Sacred's: "is this observer attached already" checks in users' code keep working."""
    first = TinyDbObserver(tmp_path / "db")
    second = TinyDbObserver(str(tmp_path / "db"), priority=2)
    assert first == second and hash(first) == hash(second)
    assert not first != second  # noqa: SIM202 (Sacred's tests check __ne__ too)
    assert second in [first] and len({first, second}) == 1
    monkeypatch.chdir(tmp_path)
    assert TinyDbObserver("db") == first  # the path is made absolute when the observer is built
    assert first != TinyDbObserver(tmp_path / "other") and first != "foo"
