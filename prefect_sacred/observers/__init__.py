"""Observers: ``RunObserver``, one wing per backend, the queue wrapper, and how they are chosen.

Names are imported on first use (PEP 562), so ``import prefect_sacred.observers.base`` loads no
backend. Each wing registers its command-line flag and URL scheme when it is imported
(:func:`~prefect_sacred.observers.registry.load_observer_plugins` imports them all).
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.base import (
        InvalidArtifactName,
        ObserverLike,
        OutputDelta,
        PendingEvent,
        RunObserver,
    )
    from prefect_sacred.observers.file_storage import FileStorageObserver
    from prefect_sacred.observers.mongo import MongoObserver, QueuedMongoObserver, parse_mongo_db_arg
    from prefect_sacred.observers.notify import SlackObserver, TelegramObserver
    from prefect_sacred.observers.object_store import GoogleCloudStorageObserver, S3Observer
    from prefect_sacred.observers.prefect_ui import PrefectArtifactsObserver
    from prefect_sacred.observers.queue import QueueObserver, UndeliveredEvents
    from prefect_sacred.observers.registry import (
        ENTRY_POINT_GROUP,
        OBSERVERS_ENV_VAR,
        ObserverConfigError,
        observer_from_url,
        observers_from_env,
    )
    from prefect_sacred.observers.sql import SqlObserver
    from prefect_sacred.observers.tinydb import TinyDbObserver, TinyDbReader

__all__ = [
    "ENTRY_POINT_GROUP",
    "OBSERVERS_ENV_VAR",
    "FileStorageObserver",
    "GoogleCloudStorageObserver",
    "InvalidArtifactName",
    "MongoObserver",
    "ObserverConfigError",
    "ObserverLike",
    "OutputDelta",
    "PendingEvent",
    "PrefectArtifactsObserver",
    "QueueObserver",
    "QueuedMongoObserver",
    "RunObserver",
    "S3Observer",
    "SlackObserver",
    "SqlObserver",
    "TelegramObserver",
    "TinyDbObserver",
    "TinyDbReader",
    "UndeliveredEvents",
    "observer_from_url",
    "observers_from_env",
    "parse_mongo_db_arg",
]

_HERE = "prefect_sacred.observers"
__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        **dict.fromkeys(
            ("InvalidArtifactName", "ObserverLike", "OutputDelta", "PendingEvent", "RunObserver"),
            f"{_HERE}.base",
        ),
        "FileStorageObserver": f"{_HERE}.file_storage",
        **dict.fromkeys(("MongoObserver", "QueuedMongoObserver", "parse_mongo_db_arg"), f"{_HERE}.mongo"),
        **dict.fromkeys(("SlackObserver", "TelegramObserver"), f"{_HERE}.notify"),
        **dict.fromkeys(("GoogleCloudStorageObserver", "S3Observer"), f"{_HERE}.object_store"),
        "PrefectArtifactsObserver": f"{_HERE}.prefect_ui",
        **dict.fromkeys(("QueueObserver", "UndeliveredEvents"), f"{_HERE}.queue"),
        **dict.fromkeys(
            (
                "ENTRY_POINT_GROUP",
                "OBSERVERS_ENV_VAR",
                "ObserverConfigError",
                "observer_from_url",
                "observers_from_env",
            ),
            f"{_HERE}.registry",
        ),
        "SqlObserver": f"{_HERE}.sql",
        **dict.fromkeys(("TinyDbObserver", "TinyDbReader"), f"{_HERE}.tinydb"),
    },
)
