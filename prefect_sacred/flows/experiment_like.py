"""What the Prefect glue, the trials and the watcher read from an experiment.

:class:`~prefect_sacred.experiment.Experiment` sits above these layers and satisfies this
protocol; code here names the protocol, never the class, so no import runs upwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prefect import Flow

    from prefect_sacred.config.assemble import Assembled
    from prefect_sacred.config.captured import CapturedFunction
    from prefect_sacred.config.ingredient import Configuration
    from prefect_sacred.core.run import Run
    from prefect_sacred.flows.starting import Prepared
    from prefect_sacred.observers.base import ObserverLike

__all__ = ["ExperimentLike"]


class ExperimentLike(Protocol):
    """An experiment as the layers below the ``Experiment`` facade see it."""

    observers: list[ObserverLike]
    captured_env: tuple[str, ...]
    captured_out_filter: Callable[[str], str] | None
    beat_interval: float
    join_timeout: float | None
    capture_mode: str
    default_command: str | None
    logger: Any
    last_run: Run | None
    doc: str
    #: Each flow run's assembled config, kept for Prefect's retries of the flow body.
    _prepared: dict[Any, Prepared]
    _main: CapturedFunction | None

    @property
    def name(self) -> str: ...

    @property
    def flow(self) -> Flow[Any, Any]: ...

    def assemble(
        self,
        config_updates: dict[str, Any] | None = None,
        named_configs: Sequence[str] = (),
        command: str | None = None,
        force: bool = False,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> Assembled: ...

    def experiment_info(self) -> dict[str, Any]: ...

    def gather_commands(self) -> Iterator[tuple[str, CapturedFunction]]: ...

    def gather_named_configs(self) -> Iterator[tuple[str, Configuration]]: ...

    def _check_values(self, assembled: Assembled, command: str | None = None) -> None: ...

    def _call_command(self, run: Any, assembled: Assembled, command: str) -> Any: ...

    def _observers_for_deployment(self) -> list[ObserverLike]: ...
