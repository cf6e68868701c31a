"""Prefect Blocks for the S3 and Google Cloud Storage observers.

A deployment selects one by name (``PREFECT_SACRED_OBSERVERS=block://sacred-s3/<name>`` or
``block://sacred-gcs/<name>``). The secret is either in the block's own secret fields or in a
saved prefect-aws / prefect-gcp credentials block that this block names, so nobody re-enters a
secret Prefect already keeps. Neither boto3, google-cloud-storage, prefect-aws nor prefect-gcp
is imported until an observer is built.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, HttpUrl, SecretStr

__all__ = ["GcsObserverBlock", "S3ObserverBlock"]

_KEY_LOGO = HttpUrl(
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/secret.png"
)


def _load_credentials(reference: str | None) -> Any:
    """The saved block ``<block-type-slug>/<name>`` (e.g. ``aws-credentials/prod``), or None."""
    if not reference:
        return None
    from prefect_sacred.observers.registry import ObserverConfigError
    from prefect_sacred.utils import redact

    try:
        return Block.load(reference)
    except Exception as exc:
        raise ObserverConfigError(
            f"cannot load credentials block {reference!r}: {redact(str(exc))}"
        ) from None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class S3ObserverBlock(Block):
    """Where and how an S3Observer stores Sacred runs: an S3 bucket or an S3-compatible store.

    Args:
        bucket: The bucket (created at the first run if it is missing).
        prefix: The key prefix holding the runs.
        region: The bucket's region.
        endpoint_url: An S3-compatible endpoint (MinIO, Ceph, R2); empty for AWS.
        priority: The observer's priority; the highest gives the run its id.
        aws_access_key_id: An access key id (empty: the credentials block or boto3's chain).
        aws_secret_access_key: Its secret.
        aws_session_token: A session token for temporary credentials.
        credentials_block: A saved prefect-aws block holding the credentials instead.

    Examples:
        Load a stored configuration and record the runs of an experiment with it:
        ```python
        from prefect_sacred.blocks import S3ObserverBlock

        s3 = S3ObserverBlock.load("BLOCK_NAME")
        ex.observers.append(s3.observer())
        ```
    """

    _block_type_name = "Sacred S3"
    _logo_url = _KEY_LOGO
    _documentation_url = HttpUrl("https://sacred.readthedocs.io/en/stable/observers.html#s3-observer")

    bucket: str = Field(description="The S3 bucket holding the runs.")
    prefix: str = Field(default="", description="The key prefix below which each run gets PREFIX/<id>/.")
    region: str | None = Field(
        default=None, description="The bucket's region (default: boto3's, else us-east-1)."
    )
    endpoint_url: str | None = Field(
        default=None, description="An S3-compatible endpoint such as http://minio:9000; empty for AWS."
    )
    priority: int = Field(
        default=20, description="The observer's priority; the highest gives the run its id."
    )
    aws_access_key_id: str | None = Field(
        default=None, description="An access key id (empty: the credentials block or boto3's usual chain)."
    )
    aws_secret_access_key: SecretStr | None = Field(default=None, description="The access key's secret.")
    aws_session_token: SecretStr | None = Field(
        default=None, description="A session token, for temporary credentials."
    )
    credentials_block: str | None = Field(
        default=None,
        description=(
            "A saved prefect-aws block with the credentials, as aws-credentials/NAME, "
            "minio-credentials/NAME or s3-bucket/NAME."
        ),
    )

    def observer(self) -> Any:
        """An S3Observer writing with these settings."""
        from prefect_sacred.observers.object_store.s3 import S3Observer

        return S3Observer(
            self.bucket,
            self.prefix,
            priority=self.priority,
            region=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=_secret(self.aws_secret_access_key),
            aws_session_token=_secret(self.aws_session_token),
            credentials=_load_credentials(self.credentials_block),
        )


class GcsObserverBlock(Block):
    """Where and how a GoogleCloudStorageObserver stores Sacred runs in a GCS bucket.

    Args:
        bucket: The bucket (it must exist).
        prefix: The key prefix holding the runs.
        endpoint_url: Another endpoint, e.g. an emulator; empty for Google Cloud.
        project: The Google Cloud project.
        priority: The observer's priority; the highest gives the run its id.
        service_account_info: A service-account key file's content.
        credentials_block: A saved prefect-gcp block holding the credentials instead.

    Examples:
        Load a stored configuration and record the runs of an experiment with it:
        ```python
        from prefect_sacred.blocks import GcsObserverBlock

        gcs = GcsObserverBlock.load("BLOCK_NAME")
        ex.observers.append(gcs.observer())
        ```
    """

    _block_type_name = "Sacred GCS"
    _logo_url = _KEY_LOGO
    _documentation_url = HttpUrl(
        "https://sacred.readthedocs.io/en/stable/observers.html#google-cloud-storage-observer"
    )

    bucket: str = Field(description="The Google Cloud Storage bucket holding the runs.")
    prefix: str = Field(default="", description="The key prefix below which each run gets PREFIX/<id>/.")
    endpoint_url: str | None = Field(
        default=None, description="Another endpoint such as an emulator's http://host:port; empty for Google."
    )
    project: str | None = Field(
        default=None, description="The Google Cloud project (default: the credentials')."
    )
    priority: int = Field(
        default=20, description="The observer's priority; the highest gives the run its id."
    )
    service_account_info: SecretDict | None = Field(
        default=None,
        description="A service-account key file's JSON content (empty: the default credentials).",
    )
    credentials_block: str | None = Field(
        default=None,
        description=(
            "A saved prefect-gcp block with the credentials, as gcp-credentials/NAME or gcs-bucket/NAME."
        ),
    )

    def observer(self) -> Any:
        """A GoogleCloudStorageObserver writing with these settings."""
        from prefect_sacred.observers.object_store.gcs import GoogleCloudStorageObserver

        info = self.service_account_info.get_secret_value() if self.service_account_info else None
        return GoogleCloudStorageObserver(
            self.bucket,
            self.prefix,
            priority=self.priority,
            endpoint_url=self.endpoint_url,
            project=self.project,
            service_account_info=dict(info) if info else None,
            credentials=_load_credentials(self.credentials_block),
        )
