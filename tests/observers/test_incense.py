"""Incense, the notebook reader Sacred users already have, reads what our observers store.

The same experiment is recorded by FileStorageObserver, by S3Observer (its prefix copied to a
local folder, as a user syncs a bucket) and by MongoObserver (over the test wire server), and
read back with Incense 0.0.15's own loaders: config, info, result, output, metrics as pandas
series, artifacts with their content.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment, FileStorageObserver
from tests.support import service_missing

incense = pytest.importorskip(
    "incense", reason="Incense is installed by `make setup` (pip install --no-deps incense)"
)

_names = itertools.count()


def _experiment(observer: Any, artifact: Path) -> Experiment:
    ex = Experiment(f"incense{next(_names)}")
    ex.observers.append(observer)

    @ex.main
    def train(epochs: int = 3, lr: float = 0.1, _run: Any = None) -> float:
        for epoch in range(epochs):
            _run.log_scalar("training.loss", 1.0 / (epoch + 1), epoch)
            print(f"epoch {epoch}")
        _run.info["best_epoch"] = epochs - 1
        _run.add_artifact(str(artifact), name="predictions.csv", content_type="text/csv")
        return lr * epochs

    return ex


def _check(experiment: Any, run_id: int) -> None:
    assert experiment.id == run_id
    assert experiment.config["epochs"] == 4 and experiment.config["lr"] == 0.5
    assert experiment.info["best_epoch"] == 3
    assert experiment.result == pytest.approx(2.0)
    assert experiment.status == "COMPLETED"
    assert "epoch 3" in experiment.captured_out
    loss = experiment.metrics["training.loss"]
    assert list(loss.index) == [0, 1, 2, 3]
    assert list(loss.values) == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert experiment.artifacts["predictions.csv"].content == b"epoch,loss\n0,1.0\n"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "predictions.csv"
    path.write_bytes(b"epoch,loss\n0,1.0\n")
    return path


def test_incense_reads_a_file_storage_run(tmp_path: Path, artifact: Path) -> None:
    runs = tmp_path / "runs"
    run = _experiment(FileStorageObserver(runs), artifact).run(config_updates={"epochs": 4, "lr": 0.5})
    loader = incense.FileSystemExperimentLoader(runs)
    _check(loader.find_by_id(int(run._id)), int(run._id))


def test_incense_reads_an_s3_run_copied_to_a_folder(
    tmp_path: Path, artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.backends import BackendUnavailable
    from tests.backends.s3 import S3Backend

    backend = S3Backend()
    try:
        backend.start(tmp_path_factory)
    except BackendUnavailable as exc:
        service_missing(f"s3: {exc}")
    try:
        run = _experiment(backend.observer(), artifact).run(config_updates={"epochs": 4, "lr": 0.5})
        local = tmp_path / "synced"
        for key in backend.store.listing(f"{backend.basedir}/")[0]:
            target = local / key[len(backend.basedir) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(backend.store.get(key) or b"")
    finally:
        backend.stop()
    _check(incense.FileSystemExperimentLoader(local).find_by_id(int(run._id)), int(run._id))


def test_incense_reads_a_mongo_run(artifact: Path) -> None:
    pytest.importorskip("mockupdb")
    from prefect_sacred import MongoObserver
    from tests.servers.mongo_wire import MongoWireServer

    server = MongoWireServer()
    server.start()
    try:
        run = _experiment(MongoObserver(url=server.uri, db_name="incense"), artifact).run(
            config_updates={"epochs": 4, "lr": 0.5}
        )
        loader = incense.ExperimentLoader(mongo_uri=server.uri, db_name="incense")
        experiment = loader.find_by_id(run._id)
        _check(experiment, run._id)
        # Incense picks its CSV artifact class from the GridFS file's content type.
        assert type(experiment.artifacts["predictions.csv"]).__name__ == "CSVArtifact"
    finally:
        server.stop()
