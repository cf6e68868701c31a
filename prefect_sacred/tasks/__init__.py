"""Work that runs beside an experiment's main function: the heartbeat."""

from prefect_sacred.tasks.heartbeat import Heartbeat

__all__ = ["Heartbeat"]
