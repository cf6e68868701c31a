"""The object-store wing: :class:`S3Observer` and :class:`GoogleCloudStorageObserver`.

Both store FileStorage's layout below a key prefix, through one implementation
(:mod:`.observer`, on the small :class:`~.bucket.Bucket` interface) with a bucket class per
store (:mod:`.s3` with boto3, :mod:`.gcs` with google-cloud-storage); :mod:`.growing` uploads
the output and metrics at a cost that grows with what is new.

Importing this package registers ``-S/--s3 s3://BUCKET/PREFIX`` and ``-G/--gcs gs://BUCKET/PREFIX``
and the URL schemes ``s3://`` and ``gs://`` (``gcs://``) for ``PREFECT_SACRED_OBSERVERS``, and
imports neither driver. A URL may carry ``?region=...&endpoint_url=...&priority=...``
(S3) or ``?endpoint_url=...&project=...&priority=...`` (GCS); credentials come from the
drivers' usual places or, for deployments, from a block (``block://sacred-s3/NAME``).
"""

from __future__ import annotations

import typing as _typing
from urllib.parse import parse_qs as _parse_qs
from urllib.parse import urlsplit as _urlsplit

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.observers import registry as _registry

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.base import ObserverLike
    from prefect_sacred.observers.object_store.bucket import Bucket, ObjectStoreError
    from prefect_sacred.observers.object_store.gcs import GoogleCloudStorageObserver
    from prefect_sacred.observers.object_store.growing import read_metrics, read_output
    from prefect_sacred.observers.object_store.observer import ObjectStoreObserver
    from prefect_sacred.observers.object_store.s3 import S3Observer

__all__ = [
    "Bucket",
    "GoogleCloudStorageObserver",
    "ObjectStoreError",
    "ObjectStoreObserver",
    "S3Observer",
    "read_metrics",
    "read_output",
]

__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "Bucket": f"{__name__}.bucket",
        "ObjectStoreError": f"{__name__}.bucket",
        "GoogleCloudStorageObserver": f"{__name__}.gcs",
        "ObjectStoreObserver": f"{__name__}.observer",
        "S3Observer": f"{__name__}.s3",
        "read_metrics": f"{__name__}.growing",
        "read_output": f"{__name__}.growing",
    },
)

_S3_OPTIONS = {"region", "endpoint_url", "priority"}
_GCS_OPTIONS = {"endpoint_url", "project", "priority"}


def _parse(url: str, schemes: tuple[str, ...], options: set[str]) -> tuple[str, str, dict[str, _typing.Any]]:
    """``scheme://BUCKET/PREFIX?option=value`` as (bucket, prefix, options)."""
    parts = _urlsplit(url.strip())
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise _registry.ObserverConfigError(f"expected {schemes[0]}://BUCKET/PREFIX")
    if "@" in parts.netloc:
        raise _registry.ObserverConfigError(
            f"{schemes[0]}:// URLs take no credentials: use the environment or a block"
        )
    found: dict[str, _typing.Any] = {}
    for key, values in _parse_qs(parts.query, keep_blank_values=True).items():
        if key not in options:
            raise _registry.ObserverConfigError(
                f"unknown option {key!r} in a {schemes[0]}:// URL (known: {', '.join(sorted(options))})"
            )
        found[key] = values[-1]
    if "priority" in found:
        try:
            found["priority"] = int(found["priority"])
        except ValueError:
            raise _registry.ObserverConfigError("priority must be an integer") from None
    return parts.netloc, parts.path.strip("/"), found


@_registry.register_observer_option(
    "-S", "--s3", "s3://BUCKET/PREFIX", "Add an S3 observer (FileStorage's layout in a bucket)."
)
def _s3_option(value: str) -> ObserverLike:
    from prefect_sacred.observers.object_store.s3 import S3Observer

    bucket, prefix, options = _parse(value, ("s3",), _S3_OPTIONS)
    return S3Observer(bucket, prefix, **options)


@_registry.register_observer_option(
    "-G", "--gcs", "gs://BUCKET/PREFIX", "Add a Google Cloud Storage observer (FileStorage's layout)."
)
def _gcs_option(value: str) -> ObserverLike:
    from prefect_sacred.observers.object_store.gcs import GoogleCloudStorageObserver

    bucket, prefix, options = _parse(value, ("gs", "gcs"), _GCS_OPTIONS)
    return GoogleCloudStorageObserver(bucket, prefix, **options)


_registry.register_url_scheme("s3")(_s3_option)
_registry.register_url_scheme("gs", "gcs")(_gcs_option)
