"""The little an object-store observer needs from a bucket, so the layout is written once.

:class:`Bucket` is implemented by :class:`~prefect_sacred.observers.object_store.s3.S3Bucket`
(boto3) and :class:`~prefect_sacred.observers.object_store.gcs.GcsBucket`
(google-cloud-storage). Keys are ``/``-separated and never start with ``/``.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod

__all__ = ["Bucket", "ObjectStoreError", "join_key"]


class ObjectStoreError(RuntimeError):
    """The bucket cannot be used: missing, unreachable, or the credentials are refused.

    The message is one line naming the bucket and the endpoint, never a secret.
    """


def join_key(*parts: str) -> str:
    """``parts`` joined with ``/``, empty parts and outer slashes dropped."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


def relative_key(key: str, base: str) -> str:
    """``key`` relative to the prefix ``base`` (Sacred's relative paths in ``run.json``)."""
    return posixpath.relpath(key, base) if base else key


class Bucket(ABC):
    """One bucket of an object store."""

    #: The bucket's name.
    name: str

    @abstractmethod
    def describe(self) -> str:
        """Where the bucket is, for people: ``s3://bucket at https://endpoint`` (no secret)."""

    @abstractmethod
    def check(self) -> None:
        """Make sure the bucket can be written, quickly.

        Raises:
            ObjectStoreError: missing (where it cannot be created), unreachable, or refused.
        """

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what is there."""

    @abstractmethod
    def create(self, key: str, data: bytes, content_type: str, claim: str | None = None) -> bool:
        """Store ``data`` under ``key`` only if no object is there; False if one was.

        ``claim``, a token unique to the caller, is kept with the object (its metadata), so a
        create whose reply was lost and that the client retried can be recognised as the
        caller's own by :meth:`claim_of`.
        """

    @abstractmethod
    def claim_of(self, key: str) -> str | None:
        """The ``claim`` the object at ``key`` was created with; None if none or no object."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes; None if it does not exist."""

    @abstractmethod
    def listing(self, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        """Keys below ``prefix`` and, with a ``delimiter``, the common prefixes one level down."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete ``keys``; missing ones are ignored."""

    def upload_file(self, key: str, filename: str, content_type: str) -> None:
        """Store the file ``filename`` under ``key`` (backends stream large files)."""
        with open(filename, "rb") as handle:
            self.put(key, handle.read(), content_type)

    def create_file(self, key: str, filename: str, content_type: str) -> bool:
        """Store the file under ``key`` unless an object is there (content-addressed copies)."""
        with open(filename, "rb") as handle:
            return self.create(key, handle.read(), content_type)
