"""Sacred's ``sacred.run``: the ``Run`` class (``_run``), for scripts that import it."""

from prefect_sacred.core.run import Run

__all__ = ["Run"]
