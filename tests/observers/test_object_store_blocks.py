"""The sacred-s3 and sacred-gcs blocks, credentials blocks of prefect-aws/prefect-gcp (duck-typed
here: those packages are optional), and the -S/-G flags and s3:// gs:// URLs."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from prefect_sacred import Experiment, GoogleCloudStorageObserver, ObserverConfigError, S3Observer
from prefect_sacred.blocks import GcsObserverBlock, S3ObserverBlock
from prefect_sacred.observers.registry import observer_from_url, observer_options
from tests.backends import BackendUnavailable
from tests.support import service_missing

SECRET = "wJalrXUtnFEMI-TOPSECRET-KEY"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.backends.s3 import S3Backend

    backend = S3Backend()
    try:
        backend.start(tmp_path_factory)
    except BackendUnavailable as exc:
        service_missing(str(exc))
    yield backend
    backend.stop()


def test_flags_and_urls_build_observers_without_connecting() -> None:
    flags = {option.short: option.long for option in observer_options()}
    assert flags["-S"] == "--s3" and flags["-G"] == "--gcs"
    s3 = observer_from_url("s3://my-bucket/exp/runs?region=eu-west-1&endpoint_url=http://h:9000&priority=5")
    assert isinstance(s3, S3Observer)
    assert (s3.bucket, s3.basedir, s3.region, s3.endpoint_url, s3.priority) == (
        "my-bucket", "exp/runs", "eu-west-1", "http://h:9000", 5
    )  # fmt: skip
    assert s3.source_dir == "exp/runs/_sources" and s3.resource_dir == "exp/runs/_resources"
    gcs = observer_from_url("gs://my-bucket/runs")
    assert isinstance(gcs, GoogleCloudStorageObserver) and (gcs.bucket, gcs.basedir) == ("my-bucket", "runs")
    assert isinstance(observer_from_url("gcs://b-1/x"), GoogleCloudStorageObserver)


@pytest.mark.parametrize(
    "url", ["s3://", "s3:///prefix", "s3://k:secret@bucket/p", "s3://b/p?colour=red", "s3://b/p?priority=x"]
)
def test_malformed_urls_are_config_errors_that_do_not_echo_secrets(url: str) -> None:
    with pytest.raises(ObserverConfigError) as caught:
        observer_from_url(url)
    assert "secret" not in str(caught.value).replace("no credentials", "")


def test_sacreds_constructors_and_create() -> None:
    observer = S3Observer.create("bucket", "base", priority=3, region="us-west-2")
    assert (observer.priority, observer.region, observer.run_location()) == (3, "us-west-2", None)
    gcs = GoogleCloudStorageObserver("bucket", "base", "res", "src", 7)
    assert (gcs.resource_dir, gcs.source_dir, gcs.priority) == ("res", "src", 7)
    assert S3Observer("b", "p").priority == 20


def test_saved_prefect_aws_credentials_and_bucket_blocks_give_an_observer(moto: Any) -> None:
    """A user with prefect-aws blocks saved gets an observer from them, without re-entering a
    secret: ``S3Observer(None, None, credentials=S3Bucket.load(...))`` or, for deployments,
    ``S3ObserverBlock(bucket=..., credentials_block="aws-credentials/NAME")``."""
    prefect_aws = pytest.importorskip("prefect_aws", reason="prefect-aws is in the dev extra")
    credentials = prefect_aws.AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
        aws_client_parameters={"endpoint_url": moto.endpoint},
    )
    credentials.save("sacred-test-aws", overwrite=True)
    prefect_aws.S3Bucket(bucket_name="from-block", bucket_folder="folder", credentials=credentials).save(
        "sacred-test-bucket", overwrite=True
    )

    observer = S3Observer(None, None, credentials=prefect_aws.S3Bucket.load("sacred-test-bucket"))
    assert (observer.bucket, observer.basedir) == ("from-block", "folder")
    run_id = observer.started_event(
        {"name": "a", "sources": []}, "m", {}, dt.datetime(2024, 1, 1), {}, {}, None
    )
    assert observer.store.get(f"folder/{run_id}/run.json")
    assert SECRET not in (observer.run_location() or "")

    S3ObserverBlock(
        bucket="by-reference", prefix="runs", credentials_block="aws-credentials/sacred-test-aws"
    ).save("sacred-test-s3-ref", overwrite=True)
    by_reference = observer_from_url("block://sacred-s3/sacred-test-s3-ref")
    run_id = by_reference.started_event(
        {"name": "a", "sources": []}, "m", {}, dt.datetime(2024, 1, 1), {}, {}, None
    )
    assert by_reference.store.get(f"runs/{run_id}/run.json")


def test_prefect_gcp_style_credentials_are_accepted() -> None:
    from google.auth.credentials import AnonymousCredentials

    class GcpCredentials:
        project = "p-1"

        def get_credentials_from_service_account(self) -> Any:
            return AnonymousCredentials()

    class GcsBucket:
        bucket = "gcs-from-block"
        bucket_folder = "f"
        gcp_credentials = GcpCredentials()

    observer = GoogleCloudStorageObserver(
        None, None, credentials=GcsBucket(), endpoint_url="http://127.0.0.1:1"
    )
    assert (observer.bucket, observer.basedir) == ("gcs-from-block", "f")
    assert observer.store.client.project == "p-1"


def test_s3_block_round_trip_by_slug_keeps_the_secret_out_of_records_and_logs(
    moto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    block = S3ObserverBlock(
        bucket="block-bucket",
        prefix="blockruns",
        endpoint_url=moto.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
        priority=11,
    )
    block.save("test-s3", overwrite=True)
    loaded = S3ObserverBlock.load("test-s3")
    assert SECRET not in repr(loaded) and SECRET not in str(loaded.model_dump())
    observer = observer_from_url("block://sacred-s3/test-s3")
    assert isinstance(observer, S3Observer) and observer.priority == 11
    ex = Experiment("blocked")
    ex.observers.append(observer)
    ex.main(lambda: print("hello") or 1)
    caplog.set_level(logging.DEBUG)
    run = ex.run()
    # (not _sources/: this module, stored as the experiment's source, spells the secret out)
    keys = observer.store.listing(f"blockruns/{run._id}/")[0]
    stored = b"".join(observer.store.get(key) or b"" for key in keys)
    assert b"hello" in stored and SECRET.encode() not in stored
    assert SECRET not in caplog.text and SECRET not in str(run.observer_errors)


def test_gcs_block_round_trip_by_slug_hides_the_service_account() -> None:
    info = {"type": "service_account", "project_id": "p", "private_key": SECRET}
    GcsObserverBlock(bucket="gcs-bucket", prefix="r", service_account_info=info).save(
        "test-gcs", overwrite=True
    )
    loaded = GcsObserverBlock.load("test-gcs")
    assert SECRET not in repr(loaded) and SECRET not in str(loaded.model_dump())
    block = GcsObserverBlock(bucket="gcs-bucket", prefix="r", endpoint_url="http://127.0.0.1:1")
    block.save("test-gcs-anon", overwrite=True)
    observer = observer_from_url("block://sacred-gcs/test-gcs-anon")
    assert isinstance(observer, GoogleCloudStorageObserver) and observer.basedir == "r"


def test_a_missing_credentials_block_is_a_clear_config_error() -> None:
    S3ObserverBlock(bucket="b-b", credentials_block="aws-credentials/nope").save(
        "test-s3-ref", overwrite=True
    )
    with pytest.raises(ObserverConfigError, match="aws-credentials/nope"):
        S3ObserverBlock.load("test-s3-ref").observer()


@pytest.mark.parametrize("block_class", [S3ObserverBlock, GcsObserverBlock])
class TestBlockStandards:
    """Prefect's BlockStandardTestSuite, minus the logo check (it downloads the image)."""

    from prefect.testing.standard_test_suites import BlockStandardTestSuite as _Suite

    @pytest.fixture
    def block(self, block_class: type) -> type:
        return block_class

    test_has_a_description = _Suite.test_has_a_description
    test_has_a_documentation_url = _Suite.test_has_a_documentation_url
    test_all_fields_have_a_description = _Suite.test_all_fields_have_a_description
    test_has_a_valid_code_example = _Suite.test_has_a_valid_code_example
