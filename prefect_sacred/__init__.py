"""prefect-sacred: Sacred's experiment observers rebuilt for Prefect 3.

Names are imported on first use (PEP 562): ``import prefect_sacred`` alone loads neither
Prefect's flow engine nor any database driver.
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.config import Ingredient
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
        GoogleCloudStorageObserver,
        InvalidArtifactName,
        MongoObserver,
        ObserverConfigError,
        ObserverLike,
        OutputDelta,
        QueuedMongoObserver,
        QueueObserver,
        RunObserver,
        S3Observer,
        SlackObserver,
        SqlObserver,
        TelegramObserver,
        TinyDbObserver,
        TinyDbReader,
    )

__version__ = "0.1.0"

__all__ = [
    "Experiment",
    "FileStorageObserver",
    "GoogleCloudStorageObserver",
    "Ingredient",
    "InvalidArtifactName",
    "MongoObserver",
    "ObserverConfigError",
    "ObserverError",
    "ObserverLike",
    "OutputDelta",
    "QueueObserver",
    "QueuedMongoObserver",
    "Run",
    "RunObserver",
    "S3Observer",
    "SlackObserver",
    "SqlObserver",
    "TelegramObserver",
    "TinyDbObserver",
    "TinyDbReader",
    "UsageError",
    "__version__",
    "apply_backspaces_and_linefeeds",
    "current_run",
]

_FLOWS = ("Experiment", "ObserverError", "Run", "UsageError", "apply_backspaces_and_linefeeds", "current_run")
__getattr__ = _lazy_attributes(
    __name__,
    {
        **dict.fromkeys(_FLOWS, "prefect_sacred.flows"),
        **dict.fromkeys(set(__all__) - {*_FLOWS, "__version__", "Ingredient"}, "prefect_sacred.observers"),
        "Ingredient": "prefect_sacred.config",
    },
)
