"""Observers: ``RunObserver`` and one module per backend.

Importing this package registers every observer's command-line flag and URL scheme. Backends
with optional dependencies import them only when an observer is built.
"""

from prefect_sacred.observers.base import InvalidArtifactName, RunObserver
from prefect_sacred.observers.file_storage import FileStorageObserver
from prefect_sacred.observers.mongo import MongoObserver
from prefect_sacred.observers.mongo_options import parse_mongo_db_arg
from prefect_sacred.observers.queue import QueuedMongoObserver, QueueObserver
from prefect_sacred.observers.registry import (
    OBSERVERS_ENV_VAR,
    ObserverConfigError,
    observer_from_url,
    observers_from_env,
)
from prefect_sacred.observers.sql import SqlObserver
from prefect_sacred.observers.tinydb import TinyDbObserver
from prefect_sacred.observers.tinydb_reader import TinyDbReader

__all__ = [
    "OBSERVERS_ENV_VAR",
    "FileStorageObserver",
    "InvalidArtifactName",
    "MongoObserver",
    "ObserverConfigError",
    "QueueObserver",
    "QueuedMongoObserver",
    "RunObserver",
    "SqlObserver",
    "TinyDbObserver",
    "TinyDbReader",
    "observer_from_url",
    "observers_from_env",
    "parse_mongo_db_arg",
]
