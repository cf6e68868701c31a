"""The Prefect UI as an observer: live progress and metrics, then a summary and links per run."""

from prefect_sacred.observers.prefect_ui.observer import (
    PREFECT_UI_ENV_VAR,
    PrefectArtifactsObserver,
    rebuild_with_prefect_ui,
    with_prefect_ui,
)

__all__ = ["PREFECT_UI_ENV_VAR", "PrefectArtifactsObserver", "rebuild_with_prefect_ui", "with_prefect_ui"]
