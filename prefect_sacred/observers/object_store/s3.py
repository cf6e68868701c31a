"""S3Observer: FileStorage's layout in an S3 bucket (AWS, MinIO, Ceph, R2 ...), with boto3.

Requires ``pip install 'prefect-sacred[s3]'``. Credentials come, in this order, from a
prefect-aws ``AwsCredentials``/``MinIOCredentials``/``S3Bucket`` block given as ``credentials``,
explicit keys, or boto3's usual chain (environment, ``~/.aws``, instance roles).
"""

from __future__ import annotations

from typing import Any

from prefect_sacred.observers.object_store.bucket import Bucket, ObjectStoreError
from prefect_sacred.observers.object_store.observer import ObjectStoreObserver
from prefect_sacred.utils import redact

__all__ = ["S3Bucket", "S3Observer"]

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
#: The start's check is one small request: an endpoint that does not answer fails it in seconds.
CHECK_READ_TIMEOUT = 5.0


class S3Bucket(Bucket):
    """A bucket through a boto3 S3 client.

    Args:
        name: The bucket.
        session: A ``boto3.session.Session`` (credentials, profile, default region).
        region: The bucket's region (default: the session's, else ``us-east-1``).
        endpoint_url: An S3-compatible endpoint (MinIO, Ceph, R2); None for AWS.
        timeout: Seconds to connect and to wait for each reply (two attempts per request); the
            start's check waits at most :data:`CHECK_READ_TIMEOUT`, once.
    """

    def __init__(
        self,
        name: str,
        session: Any,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    ):
        from botocore.config import Config

        self.name = name
        self.endpoint_url = endpoint_url
        self.region = region or session.region_name or "us-east-1"
        connect, read = timeout
        config = Config(
            connect_timeout=connect, read_timeout=read, retries={"total_max_attempts": 2, "mode": "standard"}
        )
        self.client = session.client("s3", region_name=self.region, endpoint_url=endpoint_url, config=config)
        quick = Config(
            connect_timeout=connect,
            read_timeout=min(read, CHECK_READ_TIMEOUT),
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        self._check_client = session.client(
            "s3", region_name=self.region, endpoint_url=endpoint_url, config=quick
        )

    def describe(self) -> str:
        where = redact(self.endpoint_url) if self.endpoint_url else f"AWS region {self.region}"
        return f"s3://{self.name} at {where}"

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            try:
                self._check_client.head_bucket(Bucket=self.name)
            except ClientError as exc:
                if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
                self._create_bucket()
        except ClientError as exc:
            code = _code(exc)
            if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}:
                raise ObjectStoreError(f"{self.describe()}: access denied (check the credentials)") from None
            raise ObjectStoreError(f"{self.describe()}: {code} {_message(exc)}") from None
        except BotoCoreError as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")
            raise ObjectStoreError(f"{self.describe()} cannot be reached: {reason}") from None

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.name}
        if self.region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)

    def create(self, key: str, data: bytes, content_type: str, claim: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        metadata = {"claim": claim} if claim else {}
        try:
            self.client.put_object(
                Bucket=self.name,
                Key=key,
                Body=data,
                ContentType=content_type,
                IfNoneMatch="*",
                Metadata=metadata,
            )
        except ClientError as exc:
            # 412: the key exists; 409: a concurrent conditional write to it is in progress.
            if _code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                return False
            raise
        return True

    def claim_of(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            metadata = self.client.head_object(Bucket=self.name, Key=key).get("Metadata") or {}
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return metadata.get("claim")

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return body

    def listing(self, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        kwargs: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        keys: list[str] = []
        prefixes: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            keys.extend(item["Key"] for item in page.get("Contents", []))
            prefixes.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return keys, prefixes

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects, "Quiet": True})

    def upload_file(self, key: str, filename: str, content_type: str) -> None:
        self.client.upload_file(filename, self.name, key, ExtraArgs={"ContentType": content_type})


def _code(exc: Any) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(
        error.get("Code") or getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    )


def _message(exc: Any) -> str:
    return redact(str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")))


class S3Observer(ObjectStoreObserver):
    """Stores runs in an S3 bucket below ``basedir/<id>/``, in FileStorage's layout.

    Args:
        bucket: The bucket (created at the first run if it is missing, in ``region``). None
            takes it from an ``S3Bucket`` block given as ``credentials``.
        basedir: The key prefix holding the runs (None: the ``S3Bucket`` block's folder).
        resource_dir: Prefix for resources (default ``basedir/_resources``).
        source_dir: Prefix for sources (default ``basedir/_sources``).
        priority: Observers are called in descending priority; the first id returned wins.
        region: The bucket's region (default: boto3's configured region, else us-east-1).
        endpoint_url: An S3-compatible endpoint, e.g. ``http://minio:9000``.
        aws_access_key_id: An access key (default: boto3's credential chain).
        aws_secret_access_key: Its secret.
        aws_session_token: A session token for temporary credentials.
        profile_name: A profile of ``~/.aws/config``.
        credentials: A saved prefect-aws ``AwsCredentials``, ``MinIOCredentials`` or
            ``S3Bucket`` block (anything with ``get_boto3_session()``, or a ``credentials``
            attribute that has it).
        timeout: ``(connect, read)`` seconds for each request (default ``(3, 30)``; two
            attempts each). An endpoint that does not answer fails the start within
            ``connect + 5`` seconds and an upload within twice ``connect + read``.
    """

    scheme = "s3"

    def __init__(
        self,
        bucket: str | None,
        basedir: str | None,
        resource_dir: str | None = None,
        source_dir: str | None = None,
        priority: int = 20,
        region: str | None = None,
        *,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        credentials: Any = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    ) -> None:
        if credentials is not None and hasattr(credentials, "bucket_name"):  # an S3Bucket block
            bucket = bucket or credentials.bucket_name
            basedir = basedir if basedir is not None else getattr(credentials, "bucket_folder", "")
            credentials = credentials.credentials
        if not bucket:
            raise ValueError("S3Observer needs a bucket")
        super().__init__(bucket, basedir or "", resource_dir, source_dir, priority)
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._credentials = credentials
        self._keys = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "profile_name": profile_name,
        }

    @classmethod
    def create(cls, bucket: str, basedir: str, **kwargs: Any) -> S3Observer:
        """Sacred's alternative constructor."""
        return cls(bucket, basedir, **kwargs)

    def _connect(self) -> Bucket:
        try:
            import boto3
        except ImportError:
            raise ImportError("S3Observer needs boto3: pip install 'prefect-sacred[s3]'") from None
        endpoint_url = self.endpoint_url
        if self._credentials is not None:
            session = self._credentials.get_boto3_session()
            parameters = getattr(self._credentials, "aws_client_parameters", None)
            endpoint_url = endpoint_url or getattr(parameters, "endpoint_url", None)
        else:
            session = boto3.session.Session(**{k: v for k, v in self._keys.items() if v})
        return S3Bucket(self.bucket, session, self.region, endpoint_url, self.timeout)
