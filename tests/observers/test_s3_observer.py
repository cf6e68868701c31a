"""S3Observer and GoogleCloudStorageObserver: Sacred's key layout, atomic ids, buckets, errors.

Each test runs against both real local servers (moto's S3 server, fake-gcs-server), reusing the
contract backends of tests/backends/; readers are plain: keys listed and read with the drivers.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment, FileStorageObserver, InvalidArtifactName
from prefect_sacred.observers.base import OutputDelta
from prefect_sacred.observers.object_store import ObjectStoreError
from prefect_sacred.observers.object_store.bucket import Bucket
from prefect_sacred.observers.object_store.growing import CHEAP_BYTES, MetricsObject, OutputObject
from tests.backends import Backend, BackendUnavailable
from tests.backends.file_storage import FileStorageBackend
from tests.backends.s3 import read_bucket_run
from tests.support import PYTHON, free_port, service_missing, subprocess_env


@pytest.fixture(scope="module", params=["s3", "gcs"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "s3":
        from tests.backends.s3 import S3Backend

        backend: Backend = S3Backend()
    else:
        from tests.backends.gcs import GcsBackend

        backend = GcsBackend()
    try:
        backend.start(tmp_path_factory)
    except BackendUnavailable as exc:
        service_missing(f"{backend.name}: {exc}")
    yield backend
    backend.stop()


def _experiment(observer: Any, tmp_path: Path) -> Experiment:
    ex = Experiment("layout")
    ex.observers.append(observer)
    resource = tmp_path / "data.csv"
    resource.write_text("a,b\n1,2\n")
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"\x00weights")

    @ex.main
    def train(_run: Any = None) -> int:
        for step in range(5):
            _run.log_scalar("loss", 1.0 / (step + 1), step)
            print(f"step {step}")
        _run.info["pid"] = 1
        _run.add_resource(str(resource))
        _run.add_artifact(str(artifact), "nested/model.bin")
        return 42

    return ex


def test_a_run_has_sacreds_layout_with_sources_stored_once_where_run_json_says(
    server: Any, tmp_path: Path
) -> None:
    observer = server.observer()
    run = _experiment(observer, tmp_path).run(options={"--beat-interval": 0.05})
    store: Bucket = server.store
    prefix = server.basedir
    keys = set(store.listing(f"{prefix}/")[0])
    run_files = {key.split("/", 2)[2] for key in keys if key.startswith(f"{prefix}/{run._id}/")}
    assert run_files == {
        "run.json", "config.json", "cout.txt", "info.json", "metrics.json", "nested/model.bin"
    }  # fmt: skip
    entry = json.loads(store.get(f"{prefix}/{run._id}/run.json") or b"")
    assert entry["status"] == "COMPLETED" and entry["result"] == 42
    assert entry["experiment"]["sources"], "the test module is a source"
    for _, stored in entry["experiment"]["sources"]:
        assert stored.startswith("_sources/") and f"{prefix}/{stored}" in keys
    [[_, resource_key]] = entry["resources"]
    assert resource_key.startswith(f"{prefix}/_resources/data_") and resource_key in keys
    assert store.get(f"{prefix}/{run._id}/cout.txt") == b"".join(b"step %d\n" % i for i in range(5))
    metrics = json.loads(store.get(f"{prefix}/{run._id}/metrics.json") or b"")
    assert metrics["loss"]["steps"] == list(range(5)) and len(metrics["loss"]["timestamps"]) == 5
    # A second run of the same experiment stores no new source or resource object.
    second = _experiment(type(observer)(observer.bucket, prefix, endpoint_url=server.endpoint), tmp_path)
    again = second.run(options={"--beat-interval": 0.05})
    later = set(store.listing(f"{prefix}/")[0])
    shared = {key for key in later if key.startswith((f"{prefix}/_sources/", f"{prefix}/_resources/"))}
    assert shared == {key for key in keys if key.startswith((f"{prefix}/_sources/", f"{prefix}/_resources/"))}
    assert str(again._id) != str(run._id)


def test_a_run_copied_to_a_folder_reads_like_a_file_storage_run(server: Any, tmp_path: Path) -> None:
    observer = server.observer()
    (tmp_path / "in").mkdir()
    run = _experiment(observer, tmp_path / "in").run(options={"--beat-interval": 0.05})
    store: Bucket = server.store
    local = tmp_path / "copy"
    for key in store.listing(f"{server.basedir}/")[0]:
        target = local / key[len(server.basedir) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key) or b"")
    reader = FileStorageBackend()
    reader.basedir = local
    from_folder = reader.record(run._id)
    from_bucket = read_bucket_run(store, server.basedir, run._id)
    assert from_folder == from_bucket
    assert from_folder.captured_out.count("step") == 5 and from_folder.artifacts["nested/model.bin"]
    # The same experiment recorded by FileStorage gives the same files.
    reference = _experiment(FileStorageObserver(tmp_path / "fs"), tmp_path / "in").run(
        options={"--beat-interval": 0.05}
    )
    assert _files(local / str(run._id)) == _files(tmp_path / "fs" / str(reference._id))


def _files(directory: Path) -> set[Path]:
    return {path.relative_to(directory) for path in directory.rglob("*") if path.is_file()}


CLAIM = """
import datetime as dt, sys, time
from prefect_sacred.observers.registry import observer_from_url
observer = observer_from_url(sys.argv[1])
observer.store.check()
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(observer.started_event({"name": "c", "sources": []}, "main", {}, dt.datetime(2024, 1, 1), {}, {}, None))
"""


@pytest.mark.slow
def test_twenty_processes_starting_at_once_get_twenty_distinct_ids(server: Any, tmp_path: Path) -> None:
    server.observer()
    script = tmp_path / "claim.py"
    script.write_text(CLAIM)
    at = time.time() + 12
    processes = [
        subprocess.Popen([PYTHON, str(script), server.url(), str(at)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for _ in range(20)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-500:] for _, err in outputs]
    ids = sorted(int(out.strip()) for out, _ in outputs)
    assert ids == list(range(1, 21))


def test_reattach_finishes_a_run_whose_process_died_and_merges_its_parts(server: Any) -> None:
    first = server.observer()
    run_id = first.started_event(
        {"name": "r", "sources": []}, "main", {}, dt.datetime(2024, 1, 1), {}, {}, None
    )
    output = ""
    for beat in range(6):
        new = f"{beat}" * 100_000 + "\n"
        first.log_metrics(
            {"m": {"steps": [beat], "values": [beat], "timestamps": [dt.datetime(2024, 1, 1)]}}, {}
        )
        first.heartbeat_event({}, output + new, dt.datetime(2024, 1, 1), None, OutputDelta(len(output), new))
        output += new
    assert first._output.parts, "a large output is continued by parts during the run"
    second = type(first)(first.bucket, server.basedir, endpoint_url=server.endpoint)
    assert second.reattach(run_id)
    second.failed_event(dt.datetime(2024, 1, 2), ["Traceback\n", "SIGKILL\n"])
    record = read_bucket_run(server.store, server.basedir, run_id)
    assert record.status == "FAILED" and record.captured_out == output
    assert record.metrics["m"]["steps"] == list(range(6))
    assert server.store.get(f"{server.basedir}/{run_id}/cout.txt") == output.encode()
    assert not server.store.listing(f"{server.basedir}/{run_id}/cout.txt.parts/")[0]
    assert not server.store.listing(f"{server.basedir}/{run_id}/metrics.journal/")[0]
    assert not type(first)(first.bucket, server.basedir, endpoint_url=server.endpoint).reattach(run_id)


def test_artifact_names_escaping_the_run_or_naming_its_files_are_refused(server: Any, tmp_path: Path) -> None:
    observer = server.observer()
    observer.started_event({"name": "a", "sources": []}, "main", {}, dt.datetime(2024, 1, 1), {}, {}, None)
    (tmp_path / "f").write_text("x")
    for name in ["../x", "a/../../x", "/abs", "run.json", "cout.txt.parts/000", "metrics.journal/1", "."]:
        with pytest.raises(InvalidArtifactName):
            observer.artifact_event(name, str(tmp_path / "f"))


def test_an_unreachable_endpoint_fails_the_run_at_start_quickly_without_the_secret(server: Any) -> None:
    from prefect_sacred import GoogleCloudStorageObserver, S3Observer

    endpoint = f"http://127.0.0.1:{free_port()}"
    if server.name == "s3":
        observer: Any = S3Observer("bkt", "runs", endpoint_url=endpoint, aws_access_key_id="AKIDX",
                                   aws_secret_access_key="TOPSECRETVALUE")  # fmt: skip
    else:
        observer = GoogleCloudStorageObserver("bkt", "runs", endpoint_url=endpoint)
    ex = Experiment("unreachable")
    ex.observers.append(observer)
    ex.main(lambda: 1)
    began = time.monotonic()
    with pytest.raises(Exception) as caught:
        ex.run()
    assert time.monotonic() - began < 10
    text = str(caught.value)
    assert "TOPSECRETVALUE" not in text and "cannot be" in text and endpoint in text
    assert len(str(caught.value.__cause__ or caught.value).strip().splitlines()) == 1


def test_a_missing_s3_bucket_is_created_in_us_east_1_and_in_other_regions(server: Any) -> None:
    if server.name != "s3":
        from prefect_sacred import GoogleCloudStorageObserver

        with pytest.raises(ObjectStoreError, match="does not exist"):
            GoogleCloudStorageObserver("no-such-bucket", "r", endpoint_url=server.endpoint).store.check()
        return
    import boto3

    from prefect_sacred import S3Observer

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    for region in ["us-east-1", "eu-west-1", "ap-southeast-2"]:
        name = f"fresh-{region}"
        observer = S3Observer(name, "runs", region=region, endpoint_url=server.endpoint)
        assert (
            observer.started_event(
                {"name": "b", "sources": []}, "m", {}, dt.datetime(2024, 1, 1), {}, {}, None
            )
            == "1"
        )
        location = client.get_bucket_location(Bucket=name)["LocationConstraint"]
        assert (location or "us-east-1") == region


class _Counting(Bucket):
    """An in-memory bucket counting the bytes put."""

    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.claims: dict[str, str | None] = {}
        self.uploaded = 0

    def describe(self) -> str:
        return "memory"

    def check(self) -> None:
        pass

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = data
        self.uploaded += len(data)

    def create(self, key: str, data: bytes, content_type: str, claim: str | None = None) -> bool:
        if key in self.objects:
            return False
        self.put(key, data, content_type)
        self.claims[key] = claim
        return True

    def claim_of(self, key: str) -> str | None:
        return self.claims.get(key)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def listing(self, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        return sorted(k for k in self.objects if k.startswith(prefix)), []

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)


def test_uploads_grow_with_what_is_new_at_most_three_times_the_data() -> None:
    store = _Counting()
    output = OutputObject(store, "r/cout.txt")
    text = ""
    for beat in range(2000):
        new = f"beat {beat} " + "x" * 10_000 + "\n"
        output.update(text + new, OutputDelta(len(text), new))
        text += new
    assert output.read() == text
    assert store.uploaded <= 3 * len(text) + CHEAP_BYTES * 30
    output.finish()
    assert store.objects["r/cout.txt"] == text.encode() and list(store.objects) == ["r/cout.txt"]

    store = _Counting()
    metrics = MetricsObject(store, "r")
    for beat in range(2000):
        metrics.add({"m": {"steps": list(range(beat * 50, beat * 50 + 50)), "values": [0.5] * 50,
                           "timestamps": [dt.datetime(2024, 1, 1)] * 50}})  # fmt: skip
        metrics.flush()
    from prefect_sacred.observers.object_store import read_metrics

    final_size = len(json.dumps(read_metrics(store, "r"), sort_keys=True, indent=2))
    assert store.uploaded <= 4 * final_size

    assert read_metrics(store, "r")["m"]["steps"] == list(range(100_000))


class _LostReplies(_Counting):
    """Every create is stored, but its reply is lost and the client's retry finds the object."""

    def create(self, key: str, data: bytes, content_type: str, claim: str | None = None) -> bool:
        super().create(key, data, content_type, claim)
        return False


def test_a_run_id_claim_whose_reply_was_lost_is_still_the_runs_own() -> None:
    """A create the client retried after losing the reply finds its own object: that id is taken
    by this run, not skipped (20 processes under load once got ids 3-22)."""
    from prefect_sacred.observers.object_store.observer import ObjectStoreObserver

    observer = ObjectStoreObserver.__new__(ObjectStoreObserver)
    observer._client = _LostReplies()
    assert observer._create_claimed("runs/1/run.json", b"{}")
    observer._client.claims["runs/2/run.json"] = "another process"
    observer._client.objects["runs/2/run.json"] = b"{}"
    assert not observer._create_claimed("runs/2/run.json", b"{}")
