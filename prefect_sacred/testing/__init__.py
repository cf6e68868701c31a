"""Testing tools: doubles for code that uses observers, and the contract suite for observers.

* :class:`InMemoryObserver`, :class:`FailingObserver` and :func:`capture_runs` for testing
  experiments and code around them, and :class:`InjectedOutput` to drive a ``Run`` by hand;
* :class:`ObserverContractSuite` for testing an observer you wrote: subclass it in a pytest
  module, say how to build your observer and how to read a run back into a :class:`RunRecord`.

``import prefect_sacred.testing`` loads neither Prefect's flow engine nor pytest: the suite is
imported on first use (PEP 562).
"""

from __future__ import annotations

import sys as _sys
import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.testing.doubles import FailingObserver, InjectedOutput, InMemoryObserver, capture_runs
from prefect_sacred.testing.records import RunRecord

if _typing.TYPE_CHECKING:
    from prefect_sacred.testing.contract import ObserverContractSuite

__all__ = [
    "FailingObserver",
    "InMemoryObserver",
    "InjectedOutput",
    "ObserverContractSuite",
    "RunRecord",
    "capture_runs",
]

if "pytest" in _sys.modules:  # under pytest: detailed assertion messages from the scenarios
    _sys.modules["pytest"].register_assert_rewrite(
        "prefect_sacred.testing._run_scenarios",
        "prefect_sacred.testing._process_scenarios",
        "prefect_sacred.testing._journal_scenarios",
    )

__getattr__, __dir__ = _lazy_attributes(
    __name__, {"ObserverContractSuite": "prefect_sacred.testing.contract"}
)
