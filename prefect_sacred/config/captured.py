"""Captured functions: arguments missing from a call are filled from the run's config.

What a captured function sees during a run (its part of the config, its random generator, the
run and a logger) lives in a context variable set for the run, so overlapping runs in one
process keep their own. ``_seed`` and ``_rnd`` are derived from the run's seed exactly as
Sacred 0.8.7 derives them, so the same seed gives the same numbers.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import inspect
import logging
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect_sacred.settings import SETTINGS

__all__ = [
    "SEED_RANGE",
    "CapturedFunction",
    "MissingConfigError",
    "binding_scope",
    "create_rnd",
    "get_seed",
    "new_seed",
    "reset_bindings",
    "set_global_seed",
]

#: Sacred's seed range: seeds are drawn uniformly from 1 to 10**9 (exclusive with numpy).
SEED_RANGE = (1, 10**9)
SPECIAL_ARGUMENTS = ("_config", "_run", "_log", "_seed", "_rnd")


class MissingConfigError(TypeError):
    """A captured function was called without a value the config does not provide either."""


def new_seed() -> int:
    """A fresh seed for a run that was given none, from Sacred's range."""
    return random.SystemRandom().randint(*SEED_RANGE)


@functools.cache
def _numpy_installed() -> bool:
    return importlib.util.find_spec("numpy") is not None


def _numpy() -> Any:
    """numpy, when installed. Imported with ``import``, never read from ``sys.modules``: trials
    start on several threads at once, and one must wait for another's import to finish rather
    than take the half-initialised module."""
    if not _numpy_installed():
        return None
    import numpy

    return numpy


def create_rnd(seed: int) -> Any:
    """The generator Sacred gives a captured function as ``_rnd``.

    With numpy installed a ``numpy.random.Generator`` (a ``RandomState`` before numpy 1.19, or
    with ``SETTINGS.CONFIG.NUMPY_RANDOM_LEGACY_API``), else a ``random.Random``.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"a seed is an integer, not {seed!r} ({type(seed).__name__})")
    numpy = _numpy()
    if numpy is None:
        return random.Random(seed)
    if SETTINGS.CONFIG.NUMPY_RANDOM_LEGACY_API:
        return numpy.random.RandomState(seed)
    return numpy.random.default_rng(seed)


def get_seed(rnd: Any = None) -> int:
    """Draw a seed from ``rnd`` (the global ``random`` when None), as Sacred does."""
    if rnd is None:
        return random.randint(*SEED_RANGE)
    if hasattr(rnd, "integers"):
        return int(rnd.integers(*SEED_RANGE, dtype=int))
    return int(rnd.randint(*SEED_RANGE))


@dataclass
class Binding:
    """What one captured function sees during one run."""

    config: Mapping[str, Any]
    run: Any
    logger: logging.Logger | logging.LoggerAdapter[Any] | None
    #: The function's own generator: each call draws its ``_seed`` from it.
    rnd: Any = None


_bindings: contextvars.ContextVar[Mapping[int, Binding] | None] = contextvars.ContextVar(
    "prefect_sacred_captured_bindings", default=None
)


def binding_scope(bindings: Mapping[int, Binding]) -> contextvars.Token[Mapping[int, Binding] | None]:
    """Bind captured functions (by ``id``) for the calling context; reset with the token."""
    return _bindings.set(bindings)


class CapturedFunction:
    """A function whose missing arguments are filled from the config of the running run.

    Made by ``ex.capture``/``ingredient.capture``; ``prefix`` makes it read a sub-tree of the
    config (``prefix="optimizer"`` fills ``lr`` from ``optimizer.lr``).
    """

    __name__: str
    __qualname__: str

    def __init__(self, function: Callable[..., Any], prefix: str | None = None) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.prefix = prefix or ""
        parameters = inspect.signature(function).parameters.values()
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        named = (*positional, inspect.Parameter.KEYWORD_ONLY)
        self.arguments = [parameter.name for parameter in parameters if parameter.kind in named]
        self.defaults = {
            parameter.name for parameter in parameters if parameter.default is not inspect.Parameter.empty
        }
        self.has_kwargs = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)
        self.uses_randomness = "_seed" in self.arguments or "_rnd" in self.arguments
        #: The binding of the last run it was bound to: called after that run, outside any,
        #: it still gets that run's config (Sacred keeps it too).
        self.last_binding: Binding | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with served experiments: a past run's binding (its Run) stays behind.
        return {**self.__dict__, "last_binding": None}

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self._call, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        binding = (_bindings.get() or {}).get(id(self)) or self.last_binding
        free = [name for name in self.arguments[len(args) :] if name not in kwargs]
        if binding is not None:
            options: dict[str, Any] = dict(binding.config)
            options.update(_config=binding.config, _log=binding.logger, _run=binding.run)
            if self.uses_randomness:  # every call draws, given or not, as Sacred's sequence does
                seed = get_seed(binding.rnd)
                options.update(_seed=seed, _rnd=create_rnd(seed))
            kwargs = dict(kwargs)
            for name in free:
                if name in options:
                    kwargs[name] = options[name]
        missing = [
            name for name in self.arguments[len(args) :] if name not in kwargs and name not in self.defaults
        ]
        if missing:
            where = "" if binding is not None else " (called outside a run, nothing comes from the config)"
            raise MissingConfigError(f"{self.__name__} is missing value(s) for {', '.join(missing)}{where}")
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<captured function {self.__qualname__}>"


def reset_bindings(token: contextvars.Token[Mapping[int, Binding] | None]) -> None:
    """Undo :func:`binding_scope`."""
    _bindings.reset(token)


def set_global_seed(seed: int) -> None:
    """Seed ``random``, ``numpy`` (when installed) and ``torch`` (when imported), as Sacred does.

    numpy is imported to be seeded even when the program imports it only later (Sacred imports
    it at its own import): ``np.random`` then draws the same numbers for the same seed.
    """
    random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)
