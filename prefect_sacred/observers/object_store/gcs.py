"""GoogleCloudStorageObserver: FileStorage's layout in a GCS bucket, with google-cloud-storage.

Requires ``pip install 'prefect-sacred[gcs]'``. Credentials come, in this order, from a
prefect-gcp ``GcpCredentials``/``GcsBucket`` block given as ``credentials`` (or any
``google.auth`` credentials), a service-account key (``service_account_info``, the key file's
JSON as a dict), or Google's default chain (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the
metadata server). Against an emulator (``endpoint_url`` or ``STORAGE_EMULATOR_HOST``) anonymous
credentials are used when no others are found.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_sacred.observers.object_store.bucket import Bucket, ObjectStoreError
from prefect_sacred.observers.object_store.observer import ObjectStoreObserver
from prefect_sacred.utils import redact

__all__ = ["GcsBucket", "GoogleCloudStorageObserver"]

#: (connect, read) seconds for every request.
TIMEOUT = (3.0, 30.0)
#: The start's check is one small request: an endpoint that does not answer fails it in seconds.
CHECK_READ_TIMEOUT = 5.0
#: Seconds a request is retried for (the library's default is 120, too long for a beat).
RETRY_SECONDS = 15.0


class GcsBucket(Bucket):
    """A bucket through a ``google.cloud.storage.Client``; ``timeout`` is (connect, read) seconds."""

    def __init__(
        self, name: str, client: Any, endpoint_url: str | None = None, timeout: tuple[float, float] = TIMEOUT
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.client = client
        self.endpoint_url = endpoint_url
        self.bucket = client.bucket(name)
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Conditional creates are retried too: a lost reply then looks like a lost race.
        self.retry = DEFAULT_RETRY.with_timeout(RETRY_SECONDS)

    def describe(self) -> str:
        return f"gs://{self.name}" + (f" at {redact(self.endpoint_url)}" if self.endpoint_url else "")

    def check(self) -> None:
        from google.api_core import exceptions

        try:
            quick = (self.timeout[0], min(self.timeout[1], CHECK_READ_TIMEOUT))
            self.client.get_bucket(self.name, timeout=quick, retry=None)
        except exceptions.NotFound:
            raise ObjectStoreError(f"{self.describe()} does not exist (create the bucket first)") from None
        except (exceptions.Forbidden, exceptions.Unauthorized):
            raise ObjectStoreError(f"{self.describe()}: access denied (check the credentials)") from None
        except Exception as exc:  # requests' connection errors, google.auth's refresh errors
            reason = redact(f"{type(exc).__name__}: {exc}").splitlines()[0][:300]
            raise ObjectStoreError(f"{self.describe()} cannot be used: {reason}") from None

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.bucket.blob(key).upload_from_string(
            data, content_type=content_type, timeout=self.timeout, retry=self.retry
        )

    def create(self, key: str, data: bytes, content_type: str, claim: str | None = None) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(key)
        if claim:
            blob.metadata = {"claim": claim}
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=0, timeout=self.timeout, retry=self.retry
            )
        except PreconditionFailed:
            return False
        return True

    def claim_of(self, key: str) -> str | None:
        blob = self.bucket.get_blob(key, timeout=self.timeout, retry=self.retry)
        return None if blob is None else (blob.metadata or {}).get("claim")

    def get(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            data: bytes = self.bucket.blob(key).download_as_bytes(timeout=self.timeout, retry=self.retry)
        except NotFound:
            return None
        return data

    def listing(self, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        blobs = self.client.list_blobs(
            self.name, prefix=prefix, delimiter=delimiter, timeout=self.timeout, retry=self.retry
        )
        keys = [blob.name for blob in blobs]  # iterating fills .prefixes
        return keys, sorted(blobs.prefixes)

    def delete(self, keys: list[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            try:
                self.bucket.blob(key).delete(timeout=self.timeout, retry=self.retry)
            except NotFound:
                pass

    def upload_file(self, key: str, filename: str, content_type: str) -> None:
        self.bucket.blob(key).upload_from_filename(
            filename, content_type=content_type, timeout=self.timeout, retry=self.retry
        )


class GoogleCloudStorageObserver(ObjectStoreObserver):
    """Stores runs in a GCS bucket below ``basedir/<id>/``, in FileStorage's layout.

    Args:
        bucket: The bucket; it must exist (None: the ``GcsBucket`` block's bucket).
        basedir: The key prefix holding the runs (None: the ``GcsBucket`` block's folder).
        resource_dir: Prefix for resources (default ``basedir/_resources``).
        source_dir: Prefix for sources (default ``basedir/_sources``).
        priority: Observers are called in descending priority; the first id returned wins.
        endpoint_url: Another endpoint (an emulator such as fake-gcs-server).
        project: The Google Cloud project (default: the credentials').
        service_account_info: A service-account key file's content, as a dict.
        credentials: A saved prefect-gcp ``GcpCredentials`` or ``GcsBucket`` block, or
            ``google.auth`` credentials.
        timeout: ``(connect, read)`` seconds for each request (default ``(3, 30)``; a request
            is retried for at most 15 s). An endpoint that does not answer fails the start
            within ``connect + 5`` seconds.
    """

    scheme = "gs"

    def __init__(
        self,
        bucket: str | None,
        basedir: str | None,
        resource_dir: str | None = None,
        source_dir: str | None = None,
        priority: int = 20,
        *,
        endpoint_url: str | None = None,
        project: str | None = None,
        service_account_info: dict[str, Any] | None = None,
        credentials: Any = None,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> None:
        if credentials is not None and hasattr(credentials, "gcp_credentials"):  # a GcsBucket block
            bucket = bucket or credentials.bucket
            basedir = basedir if basedir is not None else getattr(credentials, "bucket_folder", "")
            credentials = credentials.gcp_credentials
        if not bucket:
            raise ValueError("GoogleCloudStorageObserver needs a bucket")
        super().__init__(bucket, basedir or "", resource_dir, source_dir, priority)
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self.project = project
        self._service_account_info = service_account_info
        self._credentials = credentials

    @classmethod
    def create(cls, bucket: str, basedir: str, **kwargs: Any) -> GoogleCloudStorageObserver:
        """Sacred's alternative constructor."""
        return cls(bucket, basedir, **kwargs)

    def _connect(self) -> Bucket:
        try:
            from google.cloud import storage
        except ImportError:
            raise ImportError(
                "GoogleCloudStorageObserver needs google-cloud-storage: pip install 'prefect-sacred[gcs]'"
            ) from None
        credentials, project = self._resolve_credentials()
        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        try:
            client = storage.Client(project=project, credentials=credentials, client_options=options)
        except Exception as exc:  # google.auth's DefaultCredentialsError and the like
            raise ObjectStoreError(
                f"gs://{self.bucket}: no usable credentials ({redact(str(exc)).splitlines()[0][:200]})"
            ) from None
        endpoint = self.endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
        return GcsBucket(self.bucket, client, endpoint, self.timeout)

    def _resolve_credentials(self) -> tuple[Any, str | None]:
        project = self.project
        given = self._credentials
        if given is not None and hasattr(given, "get_credentials_from_service_account"):  # GcpCredentials
            return given.get_credentials_from_service_account(), project or getattr(given, "project", None)
        if given is not None:
            return given, project
        if self._service_account_info:
            from google.oauth2 import service_account

            info = self._service_account_info
            credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
            return credentials, project or info.get("project_id")
        if self.endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST"):
            import google.auth
            from google.auth.credentials import AnonymousCredentials

            try:
                credentials, default_project = google.auth.default()
            except google.auth.exceptions.DefaultCredentialsError:
                anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
                return anonymous, project or "prefect-sacred"
            return credentials, project or default_project
        return None, project
