"""``Ingredient``: a reusable part of experiments with its own config, functions and commands."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prefect_sacred.config.captured import CapturedFunction
from prefect_sacred.config.scope import ConfigDict, ConfigScope, load_config_file

__all__ = ["Ingredient"]

Configuration = ConfigScope | ConfigDict


class Ingredient:
    """A reusable part of experiments: its config is the entry ``path`` of the experiment's config.

    It has config scopes, named configs, captured functions, commands and hooks of its own, and
    can use ingredients itself.

    Example:
        ```python
        data = Ingredient("dataset")

        @data.config
        def cfg():
            filename = "train.csv"  # where the data lives

        @data.capture
        def load(filename):
            return read(filename)

        ex = Experiment("train", ingredients=[data])
        ```

    Args:
        path: The ingredient's name: its entry in the config (``dataset.filename``) and the
            prefix of its commands and named configs (``dataset.stats``).
        ingredients: The ingredients it uses.
        interactive: Accepted for Sacred's signature (sources are recorded when there are any).
        base_dir: Where its sources live (default: the directory of the file defining it).
        save_git_info: Record the git repository, commit and dirtiness of its sources.
    """

    def __init__(
        self,
        path: str,
        ingredients: Sequence[Ingredient] = (),
        interactive: bool = False,
        _caller_globals: dict[str, Any] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        save_git_info: bool = True,
    ) -> None:
        self.path = path
        self.ingredients = list(ingredients)
        self.configurations: list[Configuration] = []
        self.named_configs: dict[str, Configuration] = {}
        self.captured_functions: list[CapturedFunction] = []
        self.commands: dict[str, CapturedFunction] = {}
        self.unobserved_commands: set[str] = set()
        self.pre_run_hooks: list[CapturedFunction] = []
        self.post_run_hooks: list[CapturedFunction] = []
        self.config_hooks: list[Callable[..., Any]] = []
        self.interactive = interactive
        self.save_git_info = save_git_info
        self.logger: Any = None
        globs = _caller_globals if _caller_globals is not None else sys._getframe(1).f_globals
        #: The defining module's globals: what it imports are the experiment's dependencies.
        self.caller_globals = globs
        caller_file = globs.get("__file__")
        self.mainfile = os.path.abspath(caller_file) if caller_file else None
        if base_dir is not None:
            self.base_dir = os.path.abspath(base_dir)
        else:
            self.base_dir = os.path.dirname(self.mainfile) if self.mainfile else os.getcwd()
        self.doc = globs.get("__doc__") or ""
        self.extra_sources: set[str] = set()
        self.extra_dependencies: dict[str, str | None] = {}
        self._imported: set[str] | None = None  # kept when pickled (globals do not pickle)

    def __getstate__(self) -> dict[str, Any]:
        # Served flows are pickled into their run processes: the defining module's globals
        # travel as the names of the modules they hold.
        state = dict(self.__dict__)
        state["_imported"] = self.imported_modules()
        state["caller_globals"] = {}
        return state

    def imported_modules(self) -> set[str]:
        """Names of the modules the defining module imports (or imports things from)."""
        if self._imported is not None:
            return set(self._imported)
        names = set()
        for value in list(self.caller_globals.values()):
            name = (
                value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            )
            if isinstance(name, str) and name:
                names.add(name)
        return names

    def _definitions_changed(self) -> None:
        """Called when config definitions change (the experiment refreshes its flow's parameters)."""

    # --- config -----------------------------------------------------------------------------

    def config(self, function: Callable[..., Any]) -> ConfigScope:
        """Decorator: a config scope, whose local variables become config entries.

        Later scopes, named configs and config updates fix values; entries computed from them
        follow. A comment on an entry (on its line or just above it) is its documentation.
        """
        scope = ConfigScope(function)
        self.configurations.append(scope)
        self._definitions_changed()
        return scope

    def named_config(self, function: Callable[..., Any]) -> ConfigScope:
        """Decorator: a config scope applied only when chosen (``with NAME``, ``named_configs=``)."""
        scope = ConfigScope(function)
        self.named_configs[function.__name__] = scope
        self._definitions_changed()
        return scope

    def add_config(
        self, cfg_or_file: Mapping[str, Any] | str | os.PathLike[str] | None = None, **kw_conf: Any
    ) -> None:
        """Add config entries from a dict, a ``.json``/``.yaml``/``.pickle`` file, or keywords."""
        self.configurations.append(_config_dict(cfg_or_file, kw_conf))
        self._definitions_changed()

    def add_named_config(
        self, name: str, cfg_or_file: Mapping[str, Any] | str | os.PathLike[str] | None = None, **kw_conf: Any
    ) -> None:
        """Add a named config from a dict, a config file, or keywords."""
        if not name.isidentifier() or "." in name:
            raise ValueError(f"named config {name!r}: the name must be a Python identifier")
        self.named_configs[name] = _config_dict(cfg_or_file, kw_conf)
        self._definitions_changed()

    def config_hook(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: ``function(config, command_name, logger)`` returns config updates to apply."""
        self.config_hooks.append(function)
        return function

    # --- functions ----------------------------------------------------------------------------

    def capture(self, function: Callable[..., Any] | None = None, prefix: str | None = None) -> Any:
        """Decorator: missing arguments are filled from the config (``prefix`` picks a sub-tree).

        ``_config``, ``_run``, ``_log``, ``_seed`` and ``_rnd`` receive the function's config, the
        run, a logger, a seed and a random generator seeded with it (new on every call).
        """
        if function is None:
            return lambda fn: self.capture(fn, prefix=prefix)
        for captured in self.captured_functions:
            if function is captured or function is captured.function:
                return captured
        captured = CapturedFunction(function, prefix=prefix)
        self.captured_functions.append(captured)
        return captured

    def command(
        self, function: Callable[..., Any] | None = None, prefix: str | None = None, unobserved: bool = False
    ) -> Any:
        """Decorator: a command, run with ``python exp.py NAME`` or ``ex.run(NAME)``; also captured."""
        if function is None:
            return lambda fn: self.command(fn, prefix=prefix, unobserved=unobserved)
        captured = self.capture(function, prefix=prefix)
        self.commands[captured.__name__] = captured
        if unobserved:
            self.unobserved_commands.add(captured.__name__)
        return captured

    def pre_run_hook(self, function: Callable[..., Any] | None = None, prefix: str | None = None) -> Any:
        """Decorator: a captured function run just before the main function."""
        return self._hook(self.pre_run_hooks, function, prefix)

    def post_run_hook(self, function: Callable[..., Any] | None = None, prefix: str | None = None) -> Any:
        """Decorator: a captured function run just after the main function returned."""
        return self._hook(self.post_run_hooks, function, prefix)

    def _hook(
        self, hooks: list[CapturedFunction], function: Callable[..., Any] | None, prefix: str | None
    ) -> Any:
        if function is None:
            return lambda fn: self._hook(hooks, fn, prefix)
        captured = self.capture(function, prefix=prefix)
        hooks.append(captured)
        return captured

    # --- what is recorded ----------------------------------------------------------------------

    def add_source_file(self, filename: str | os.PathLike[str]) -> None:
        """Record ``filename`` among the experiment's sources."""
        path = os.path.abspath(filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"add_source_file: no such file: {path}")
        self.extra_sources.add(path)

    def add_package_dependency(self, package_name: str, version: str | None = None) -> None:
        """Record ``package_name`` (at ``version``, default: the installed one) as a dependency."""
        self.extra_dependencies[package_name] = version

    # --- the tree of ingredients ----------------------------------------------------------------

    def traverse_ingredients(self) -> Iterator[tuple[Ingredient, int]]:
        """This ingredient (depth 0) and every ingredient below it with its depth."""
        yield from self._traverse(0, set())

    def _traverse(self, depth: int, seen: set[int]) -> Iterator[tuple[Ingredient, int]]:
        if id(self) in seen:
            raise ValueError(f"ingredient {self.path!r} uses itself (a circular dependency)")
        seen = seen | {id(self)}
        yield self, depth
        for ingredient in self.ingredients:
            yield from ingredient._traverse(depth + 1, seen)

    def gather_commands(self) -> Iterator[tuple[str, CapturedFunction]]:
        """Every command of this ingredient and below, by its full dotted name."""
        for ingredient, _ in self.traverse_ingredients():
            prefix = "" if ingredient is self else ingredient.path + "."
            for name, command in ingredient.commands.items():
                yield prefix + name, command

    def gather_named_configs(self) -> Iterator[tuple[str, Configuration]]:
        """Every named config of this ingredient and below, by its full dotted name."""
        for ingredient, _ in self.traverse_ingredients():
            prefix = "" if ingredient is self else ingredient.path + "."
            for name, config in ingredient.named_configs.items():
                yield prefix + name, config


def _config_dict(
    cfg_or_file: Mapping[str, Any] | str | os.PathLike[str] | None, kw_conf: dict[str, Any]
) -> ConfigDict:
    if cfg_or_file is not None and kw_conf:
        raise ValueError("add_config takes a dict, a config file or keyword arguments, not both")
    if cfg_or_file is None:
        if not kw_conf:
            raise ValueError("add_config needs a dict, a config file or keyword arguments")
        return ConfigDict(kw_conf)
    if isinstance(cfg_or_file, Mapping):
        return ConfigDict(cfg_or_file)
    if isinstance(cfg_or_file, (str, os.PathLike)):
        path = os.fspath(cfg_or_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        return ConfigDict(load_config_file(path))
    raise TypeError(f"add_config takes a dict or a path to a config file, not {type(cfg_or_file).__name__}")
