"""``RunRecord``: a stored run as the contract suite compares it, whatever the storage format."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunRecord"]


@dataclass
class RunRecord:
    """A stored run, read back from an observer's storage by ``ObserverContractSuite.read_run``.

    Fill it from what the storage holds, not from the observer's memory: the suite checks what
    a reader of the storage would see. Values are as the storage gives them back (JSON-like
    values, datetimes where the storage keeps them).

    Attributes:
        status: ``RUNNING``, ``COMPLETED``, ``FAILED``, ``INTERRUPTED`` or ``TIMEOUT``.
        config: The run's config (``seed`` included).
        info: The run's ``info`` dict as of the last heartbeat.
        result: The main function's return value (``None`` when it did not return).
        captured_out: The whole captured output.
        heartbeat: When the last heartbeat was taken.
        start_time: When the run started.
        stop_time: When the run ended (``None`` while it runs).
        fail_trace: The failure's traceback as a list of lines (``None`` unless it failed).
        metrics: Every metric point: ``{name: {"steps": [...], "values": [...]}}``.
        artifacts: ``{artifact name: content}``.
        resources: Base names of the files the run opened as resources.
        meta: The run's ``meta_info`` (``command``, ``options``, ``comment``...).
    """

    status: str
    config: dict[str, Any]
    info: dict[str, Any]
    result: Any
    captured_out: str
    heartbeat: dt.datetime | None
    start_time: dt.datetime | None
    stop_time: dt.datetime | None
    fail_trace: list[str] | None
    metrics: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
