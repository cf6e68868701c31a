"""The ``prefect-sacred`` console script: ``sync`` (:mod:`.main`) and ``watch`` (:mod:`.watch`)."""

from prefect_sacred.cli.main import main, run

__all__ = ["main", "run"]
