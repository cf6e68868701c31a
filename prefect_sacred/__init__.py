"""prefect-sacred: Sacred's experiment observers rebuilt for Prefect 3."""

from prefect_sacred.flows import (
    Experiment,
    ObserverError,
    Run,
    UsageError,
    apply_backspaces_and_linefeeds,
    current_run,
)
from prefect_sacred.observers import (
    FileStorageObserver,
    InvalidArtifactName,
    MongoObserver,
    ObserverConfigError,
    QueuedMongoObserver,
    QueueObserver,
    RunObserver,
    SqlObserver,
    TinyDbObserver,
    TinyDbReader,
)

__version__ = "0.1.0"

__all__ = [
    "Experiment",
    "FileStorageObserver",
    "InvalidArtifactName",
    "MongoObserver",
    "ObserverConfigError",
    "ObserverError",
    "QueueObserver",
    "QueuedMongoObserver",
    "Run",
    "RunObserver",
    "SqlObserver",
    "TinyDbObserver",
    "TinyDbReader",
    "UsageError",
    "__version__",
    "apply_backspaces_and_linefeeds",
    "current_run",
]
