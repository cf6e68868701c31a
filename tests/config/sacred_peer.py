"""Build the same experiment with Sacred 0.8.7 and with prefect_sacred, and read both configs."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sacred

from prefect_sacred import Experiment, Ingredient
from prefect_sacred.config.captured import binding_scope, reset_bindings

Builder = Callable[[Any, Any], Any]  # (Experiment class, Ingredient class) -> experiment


def sacred_experiment(build: Builder) -> Any:
    return build(sacred.Experiment, sacred.Ingredient)


def our_experiment(build: Builder) -> Experiment:
    return build(Experiment, Ingredient)  # type: ignore[no-any-return]


def sacred_run(
    ex: Any, command: str | None = None, updates: dict[str, Any] | None = None, named: Sequence[str] = ()
) -> Any:
    """Sacred's run object, configured but not started: its config and bound captured functions."""
    quiet = logging.getLogger("sacred-peer")
    quiet.setLevel(logging.ERROR)
    ex.logger = quiet
    return ex._create_run(command or ex.default_command, updates, named)


@contextlib.contextmanager
def bound(ex: Experiment, updates: dict[str, Any] | None = None, named: Sequence[str] = ()) -> Iterator[Any]:
    """Our assembled config, with the captured functions bound as in a run."""
    assembled = ex.assemble(updates, named)
    token = binding_scope(assembled.bindings(None, logging.getLogger("peer")))
    try:
        yield assembled
    finally:
        reset_bindings(token)


def printed(call: Callable[[], Any]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        call()
    return out.getvalue()
