"""prefect-sacred: Sacred's experiment observers rebuilt for Prefect 3.

Names are imported on first use (PEP 562): ``import prefect_sacred`` alone loads neither
Prefect's flow engine nor any database driver.
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from prefect_sacred.config import Ingredient
    from prefect_sacred.core.run import ObserverError, Run, current_run
    from prefect_sacred.experiment import Experiment
    from prefect_sacred.flows.options import UsageError
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
    from prefect_sacred.settings import SETTINGS
    from prefect_sacred.utils import SacredError, apply_backspaces_and_linefeeds

__version__ = "0.1.0"

__all__ = [
    "SETTINGS",
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
    "SacredError",
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

_ELSEWHERE = {
    "Experiment": "prefect_sacred.experiment",
    "Ingredient": "prefect_sacred.config",
    "ObserverError": "prefect_sacred.core.run",
    "Run": "prefect_sacred.core.run",
    "SETTINGS": "prefect_sacred.settings",
    "SacredError": "prefect_sacred.utils",
    "UsageError": "prefect_sacred.flows.options",
    "apply_backspaces_and_linefeeds": "prefect_sacred.utils",
    "current_run": "prefect_sacred.core.run",
}
__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        **dict.fromkeys(set(__all__) - {*_ELSEWHERE, "__version__"}, "prefect_sacred.observers"),
        **_ELSEWHERE,
    },
    instead={
        "host_info_getter": "record such facts in _run.info, or name environment variables with "
        "Experiment(captured_env=[...]) or SETTINGS.HOST_INFO.CAPTURED_ENV",
        "host_info_gatherer": "record such facts in _run.info, or name environment variables with "
        "Experiment(captured_env=[...]) or SETTINGS.HOST_INFO.CAPTURED_ENV",
        "cli_option": "observer flags are registered with "
        "prefect_sacred.observers.registry.register_observer_option; run options go in ex.run(options=...)",
    },
)
