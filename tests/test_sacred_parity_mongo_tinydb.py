"""One Sacred script, run by Sacred 0.8.7 and by prefect_sacred into MongoDB and TinyDB.

The stored run documents are compared field by field; what may differ is what the README
documents: Prefect's ids in ``meta.prefect``, the package recorded as a dependency, host and
times, database ids, the resource's content also kept in GridFS; Sacred's own run log lines in
the captured output are a known difference (the xfail below). Sacred's own TinyDbObserver
needs ``tinydb-serialization``, which is not a dependency here, so our TinyDB record is compared
with Sacred's Mongo record: Sacred writes the same run entry to both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, subprocess_env

pytestmark = pytest.mark.slow

SCRIPT = '''\
"""A noisy fit with metrics, info, an artifact and a resource."""
from sacred import Experiment

ex = Experiment("fit")


@ex.config
def cfg():
    lr = 0.1  # learning rate
    steps = 3
    label = "lr={}".format(lr)


@ex.named_config
def slow():
    lr = 0.01
    steps = 4


@ex.capture
def noise(_rnd, scale=1.0):
    return float(_rnd.normal()) * scale


@ex.capture
def train(lr, steps, _run):
    loss = 1.0
    for step in range(steps):
        loss = loss * (1 - lr) + noise(scale=0.01)
        _run.log_scalar("loss", loss, step)
        _run.log_scalar("lr", lr)
    return loss


@ex.automain
def main(label, _run):
    print("training", label)
    with _run.open_resource("data.txt") as f:
        data = f.read()
    loss = train()
    _run.info["data"] = data.strip()
    _run.info["best"] = {"loss": loss}
    with open("model.txt", "w") as f:
        f.write("weights " + label)
    _run.add_artifact("model.txt")
    return {"loss": loss, "label": label}
'''

ARGS = ["with", "slow", "steps=5", "seed=42"]


def run_script(directory: Path, importing: str, flags: list[str]) -> None:
    directory.mkdir()
    script = directory / "fit.py"
    script.write_text(SCRIPT.replace("from sacred import", f"from {importing} import"))
    (directory / "data.txt").write_text("ten rows\n")
    done = subprocess.run(
        [PYTHON, str(script), *ARGS, *flags, "--name", "fit"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=directory,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import gridfs
    import pymongo

    from tests.servers.mongo_wire import MongoWireServer

    server = MongoWireServer()
    server.start()
    client: Any = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000)
    base = tmp_path_factory.mktemp("parity")
    try:
        address = f"127.0.0.1:{server.port}"
        run_script(base / "sacred", "sacred", ["-m", f"{address}:theirs"])
        run_script(base / "ours", "prefect_sacred", ["-m", f"{address}:ours", "-t", "tiny"])
        out: dict[str, Any] = {}
        for name in ("theirs", "ours"):
            db = client[name]
            run = db.runs.find_one()
            out[name] = {
                "run": run,
                "metrics": list(db.metrics.find()),
                "files": {f.filename: f.read() for f in gridfs.GridFS(db).find()},
            }
        out["tiny"] = json.loads((base / "ours" / "tiny" / "metadata.json").read_text())["runs"]
        out["tiny_dir"] = base / "ours" / "tiny"
        out["dirs"] = {"theirs": str(base / "sacred"), "ours": str(base / "ours")}
        yield out
    finally:
        client.close()
        server.stop()


MODEL = b"weights lr=0.01"
MD5 = {"model.txt": hashlib.md5(MODEL).hexdigest(), "data.txt": hashlib.md5(b"ten rows\n").hexdigest()}
USER_LINES = ["training lr=0.01"]


def same_options(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Every option Sacred stores, stored alike; only the database name in ``-m`` differs."""
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if key == "--mongo_db":
            assert ours[key].rsplit(":", 1)[0] == value.rsplit(":", 1)[0]
        elif key != "--tiny_db":  # Sacred ran without -t (see the module docstring)
            assert ours[key] == value, key


def test_mongo_run_document_matches_sacreds(records: dict[str, Any]) -> None:
    ours, theirs = records["ours"]["run"], records["theirs"]["run"]
    assert set(ours) == set(theirs)
    for key in ("_id", "format", "command", "config", "status", "result"):
        assert ours[key] == theirs[key], key
    assert ours["config"] == {"label": "lr=0.01", "lr": 0.01, "seed": 42, "steps": 5}
    assert ours["result"]["loss"] == theirs["result"]["loss"]  # the same _rnd numbers
    experiment, sacred_experiment = ours["experiment"], theirs["experiment"]
    assert set(experiment) == set(sacred_experiment)
    for key in ("name", "mainfile", "repositories"):
        assert experiment[key] == sacred_experiment[key], key
    assert [d.split("==")[0] for d in experiment["dependencies"]] == ["numpy", "prefect-sacred"]
    assert [d.split("==")[0] for d in sacred_experiment["dependencies"]] == ["numpy", "sacred"]
    assert [name for name, _ in experiment["sources"]] == [n for n, _ in sacred_experiment["sources"]]
    assert type(experiment["sources"][0][1]) is type(sacred_experiment["sources"][0][1])  # an ObjectId
    meta, sacred_meta = ours["meta"], theirs["meta"]
    assert set(meta) - {"prefect"} == set(sacred_meta)
    for key in ("command", "config_updates", "named_configs"):
        assert meta[key] == sacred_meta[key], key
    same_options(meta["options"], sacred_meta["options"])
    assert set(meta["prefect"]) >= {"flow_run_id", "flow_run_name"}
    assert set(ours["host"]) == set(theirs["host"])
    for doc in (ours, theirs):
        assert isinstance(doc["heartbeat"], dt.datetime)
        assert doc["start_time"] <= doc["stop_time"] <= doc["heartbeat"] + dt.timedelta(seconds=1)


def test_mongo_info_metrics_artifacts_and_resources_match_sacreds(records: dict[str, Any]) -> None:
    ours, theirs = records["ours"], records["theirs"]
    info, sacred_info = dict(ours["run"]["info"]), dict(theirs["run"]["info"])
    refs, sacred_refs = info.pop("metrics"), sacred_info.pop("metrics")
    assert info == sacred_info == {"data": "ten rows", "best": {"loss": ours["run"]["result"]["loss"]}}
    assert [ref["name"] for ref in refs] == [ref["name"] for ref in sacred_refs] == ["loss", "lr"]
    # each reference names its metrics document, as Omniboard follows it
    assert {str(m["_id"]) for m in ours["metrics"]} == {ref["id"] for ref in refs}
    for doc, sacred_doc in zip(ours["metrics"], theirs["metrics"], strict=True):
        assert set(doc) == set(sacred_doc)
        for key in ("name", "run_id", "steps", "values"):
            assert doc[key] == sacred_doc[key], key
        assert len(doc["timestamps"]) == len(sacred_doc["timestamps"])
        assert all(isinstance(t, dt.datetime) for t in doc["timestamps"])
    assert [a["name"] for a in ours["run"]["artifacts"]] == [a["name"] for a in theirs["run"]["artifacts"]]
    assert (
        ours["files"]["artifact://runs/1/model.txt"]
        == theirs["files"]["artifact://runs/1/model.txt"]
        == MODEL
    )
    dirs = records["dirs"]
    assert ours["run"]["resources"] == [[f"{dirs['ours']}/data.txt", MD5["data.txt"]]]
    assert theirs["run"]["resources"] == [[f"{dirs['theirs']}/data.txt", MD5["data.txt"]]]
    # Sources alike in GridFS; ours also keeps the resource's content there (an addition).
    source = {Path(name).name: data for name, data in ours["files"].items() if name.endswith("fit.py")}
    sacred_source = {
        Path(name).name: data for name, data in theirs["files"].items() if name.endswith("fit.py")
    }
    assert source["fit.py"].replace(b"prefect_sacred", b"sacred") == sacred_source["fit.py"]


def test_captured_output_holds_what_the_program_printed(records: dict[str, Any]) -> None:
    ours, theirs = records["ours"]["run"]["captured_out"], records["theirs"]["run"]["captured_out"]
    for line in USER_LINES:
        assert line in ours.splitlines() and line in theirs.splitlines()
    assert "Running hook" not in ours and "View at" not in ours


@pytest.mark.xfail(
    strict=True,
    reason="Sacred's captured output also holds its own log lines (INFO - fit - Running command "
    "'main' / Started run with ID \"1\" / Result: ... / Completed after ...) and the MongoObserver's "
    "'Added text/plain as content-type of artifact ...' print; ours holds only the program's lines "
    "(ours logs 'Started run with ID' to the terminal, outside the capture)",
)
def test_captured_output_has_sacreds_own_run_lines(records: dict[str, Any]) -> None:
    ours, theirs = records["ours"]["run"]["captured_out"], records["theirs"]["run"]["captured_out"]
    for line in ("Running command 'main'", 'Started run with ID "1"', "Result: {", "Completed after"):
        assert line in theirs
        assert line in ours


def test_tinydb_record_matches_sacreds_format(records: dict[str, Any]) -> None:
    (run,) = records["tiny"].values()
    theirs = records["theirs"]["run"]
    # Sacred's TinyDbObserver stores Sacred's Mongo run entry, with its own format name and
    # hashfs references ([..., md5, '{TinyFile}:"md5"']) in place of GridFS ids.
    assert set(run) == set(theirs)
    assert run["format"] == "TinyDbObserver-0.8.7"
    for key in ("_id", "command", "config", "status", "result", "captured_out"):
        assert run[key] == records["ours"]["run"][key], key
    for key in ("command", "config", "status", "result"):
        assert run[key] == theirs[key], key
    info = {key: value for key, value in theirs["info"].items() if key != "metrics"}
    assert run["info"] == info  # Sacred's TinyDbObserver records no metrics
    meta = {key: value for key, value in run["meta"].items() if key != "prefect"}
    assert {key: value for key, value in meta.items() if key != "options"} == {
        key: value for key, value in theirs["meta"].items() if key != "options"
    }
    same_options(meta["options"], theirs["meta"]["options"])
    dirs = records["dirs"]
    model = f'{{TinyFile}}:"{MD5["model.txt"]}"'
    assert run["artifacts"] == [["model.txt", f"{dirs['ours']}/model.txt", MD5["model.txt"], model]]
    data = f'{{TinyFile}}:"{MD5["data.txt"]}"'
    assert run["resources"] == [[f"{dirs['ours']}/data.txt", MD5["data.txt"], data]]
    ((name, digest, ref),) = run["experiment"]["sources"]
    assert name == "fit.py" and ref == f'{{TinyFile}}:"{digest}"'
    assert {k: v for k, v in run["experiment"].items() if k != "sources"} == {
        k: v for k, v in records["ours"]["run"]["experiment"].items() if k != "sources"
    }
    times = {key: run[key] for key in ("start_time", "heartbeat", "stop_time")}
    parsed = {
        key: dt.datetime.strptime(value.removeprefix("{TinyDate}:"), "%Y-%m-%dT%H:%M:%S.%f")
        for key, value in times.items()
    }
    assert all(value.startswith("{TinyDate}:") for value in times.values())
    assert parsed["start_time"] <= parsed["stop_time"]
    import hashfs

    fs = hashfs.HashFS(str(records["tiny_dir"] / "hashfs"), depth=3, width=2, algorithm="md5")
    with fs.open(MD5["model.txt"]) as stored:
        assert stored.read() == MODEL
    with fs.open(digest) as stored:
        assert b"from prefect_sacred import Experiment" in stored.read()
