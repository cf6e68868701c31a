"""Assembling a run's config from an experiment's ingredients, as Sacred 0.8.7 does.

Four phases, one scaffold per ingredient (ingredients before the ingredients using them):
config updates are handed to the ingredient they address; named configs are evaluated and
become fixed updates; config scopes are evaluated around the fixed values; then the seeds:
the experiment's seed seeds a generator that draws each ingredient's seed and each captured
function's generator, in Sacred's order, so ``_seed``/``_rnd`` give Sacred's numbers.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.config.captured import Binding, CapturedFunction, create_rnd, get_seed, new_seed
from prefect_sacred.config.custom_containers import make_read_only
from prefect_sacred.config.fixing import ConfigSummary, unfix
from prefect_sacred.config.ingredient import Configuration, Ingredient
from prefect_sacred.config.paths import (
    flatten_items,
    get_by_path,
    is_prefix,
    join_paths,
    nest,
    prefixes,
    set_by_path,
)
from prefect_sacred.config.scope import ConfigDict, load_config_file
from prefect_sacred.settings import SETTINGS
from prefect_sacred.utils import ConfigAddedError, ConfigError, NamedConfigNotFoundError

__all__ = [
    "Assembled",
    "ConfigAddedError",
    "ConfigError",
    "NamedConfigNotFoundError",
    "assemble",
    "silent_log",
]

logger = logging.getLogger("prefect_sacred")


@dataclass(eq=False)
class _Scaffold:
    ingredient: Ingredient
    path: str
    configurations: list[Configuration]
    subrunners: dict[str, _Scaffold]
    generate_seed: bool
    updates: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summaries: list[ConfigSummary] = field(default_factory=list)
    fallback: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    rnd: Any = None
    mods: ConfigSummary = field(default_factory=ConfigSummary)
    #: What its config scopes get as ``_log`` (Sacred's ``experiment_name.ingredient_path``).
    logger: Any = None

    def gather_fallbacks(self) -> None:
        # The configs of its ingredients, readable (not writable) from its scopes, and _log.
        self.fallback = {"_log": self.logger}
        for path, sub in self.subrunners.items():
            relative = path[len(self.path) :].strip(".") if self.path and is_prefix(self.path, path) else path
            set_by_path(self.fallback, relative, sub.config)

    def updates_recursive(self) -> dict[str, Any]:
        updates = dict(self.updates)
        for path, sub in self.subrunners.items():
            if is_prefix(self.path, path) and (below := sub.updates_recursive()):
                updates[path[len(self.path) :].strip(".")] = below
        return updates

    def evaluate_named(self, name: str) -> dict[str, Any]:
        if os.path.isfile(name):
            named: Configuration = ConfigDict(load_config_file(name))
        elif name in self.ingredient.named_configs:
            named = self.ingredient.named_configs[name]
        else:
            known = ", ".join(sorted(self.ingredient.named_configs)) or "none"
            where = f" of ingredient {self.path!r}" if self.path else ""
            raise NamedConfigNotFoundError(
                f"no named config {name!r}{where} (known: {known}), and no config file of that name"
            )
        return unfix(named(fixed=self.updates_recursive(), preset=self.presets, fallback=self.fallback))  # type: ignore[no-any-return]

    def set_up_config(self) -> None:
        final: dict[str, Any] = dict(self.config)
        self.summaries = []
        for configuration in self.configurations:
            summary = configuration(fixed=self.updates, preset=final, fallback=self.fallback)
            self.summaries.append(summary)
            final.update(summary)
        if not self.configurations:
            final.update(copy.deepcopy(self.updates))
        self.config = unfix(final)
        _keep_fixed_as_given(self.config, self.updates)
        self.mods = ConfigSummary(added={path for path, _ in flatten_items(self.updates)})
        for summary in self.summaries:
            self.mods.narrow(summary)

    def set_up_seed(self, rnd: Any = None) -> None:
        if self.seed is not None:
            return
        self.seed = self.config.get("seed")
        if self.seed is None:
            self.seed = get_seed(rnd) if rnd is not None else new_seed()
        # Only ingredients draw from it here (numpy is imported only when needed).
        self.rnd = create_rnd(self.seed) if self.subrunners else None
        if self.generate_seed:
            self.config["seed"] = self.seed
        if "seed" in self.config and "seed" in self.mods.added:
            self.mods.modified.add("seed")
            self.mods.added.discard("seed")
        # Sacred seeds only ingredients whose path extends this one's and leaves the others
        # to the unseeded global ``random``; here every ingredient's seed follows the run's.
        for _, sub in reversed(list(self.subrunners.items())):
            sub.set_up_seed(self.rnd)

    def fixture(self) -> dict[str, Any]:
        """Its config with the configs of every ingredient below it in place (what its functions read).

        Each ingredient's own config goes at its path relative to this one (deepest first), as
        Sacred places them.
        """
        result = dict(self.config)

        def place(runner: _Scaffold) -> None:
            for path, sub in runner.subrunners.items():
                place(sub)
                relative = path[len(self.path) :].strip(".") if is_prefix(self.path, path) else path
                set_by_path(result, relative, dict(sub.config))

        place(self)
        return result

    def captured_arguments(self) -> set[str]:
        names = {
            join_paths(function.prefix, name)
            for function in self.ingredient.captured_functions
            for name in function.arguments
        }
        return names | {"__doc__"}


@dataclass
class Assembled:
    """A run's config, what changed in it, and how to bind its captured functions."""

    config: dict[str, Any]
    mods: ConfigSummary
    scaffolds: dict[str, _Scaffold]
    named_configs: list[str]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def bindings(
        self, run: Any, root_logger: logging.Logger | logging.LoggerAdapter[Any] | None
    ) -> dict[int, Binding]:
        """Bind every captured function to this run (each gets its own generator).

        With ``SETTINGS.CONFIG.READ_ONLY_CONFIG`` (the default) the config they see is read-only.
        """
        bindings: dict[int, Binding] = {}
        randomness = any(
            function.uses_randomness
            for scaffold in self.scaffolds.values()
            for function in scaffold.ingredient.captured_functions
        )
        read_only = bool(SETTINGS.CONFIG.READ_ONLY_CONFIG)
        for scaffold in self.scaffolds.values():
            fixture = make_read_only(scaffold.fixture()) if read_only else scaffold.fixture()
            seed = scaffold.config.get("seed", scaffold.seed)
            rnd = create_rnd(seed) if randomness and seed is not None else None
            for function in scaffold.ingredient.captured_functions:
                function_rnd = create_rnd(get_seed(rnd)) if rnd is not None else None
                bindings[id(function)] = function.last_binding = Binding(
                    config=get_by_path(fixture, function.prefix, {}),
                    run=run,
                    logger=_child(root_logger, scaffold.path, function.__name__),
                    rnd=function_rnd,
                )
        return bindings


def _check_keys(updates: Mapping[str, Any], path: str = "") -> None:
    """Config keys are strings (Sacred: "Config-keys have to be strings").

    Raises:
        ConfigError: naming the key and where it is.
    """
    for key, value in updates.items():
        if not isinstance(key, str):
            where = f" in {path!r}" if path else ""
            raise ConfigError(
                f"config key {key!r}{where} is a {type(key).__name__}: config keys have to be strings"
            )
        if isinstance(value, Mapping):
            _check_keys(value, join_paths(path, key))


def silent_log() -> logging.Logger:
    """A logger that says nothing: for a config only looked at (the flow's form, ``--help``)."""
    silent = logging.getLogger("prefect_sacred.silent")
    if not silent.handlers:
        silent.addHandler(logging.NullHandler())
        silent.propagate = False
        silent.setLevel(logging.CRITICAL + 1)
    return silent


def _keep_fixed_as_given(config: dict[str, Any], fixed: Mapping[str, Any] | None) -> None:
    """Fixed entries (config updates) hold what was given: a tuple stays a tuple, as in Sacred."""
    for path, value in flatten_items(fixed or {}):
        if isinstance(value, tuple) and get_by_path(config, path, _ABSENT) is not _ABSENT:
            set_by_path(config, path, copy.deepcopy(value))


_ABSENT = object()


def _scope_logger(
    root: Ingredient, path: str, given: logging.Logger | logging.LoggerAdapter[Any] | None
) -> logging.Logger | logging.LoggerAdapter[Any]:
    """The ``_log`` of a config scope: the logger given to :func:`assemble` (a silent one when the
    config is only looked at), else the experiment's (or one of its name), per ingredient."""
    base: logging.Logger | logging.LoggerAdapter[Any]
    if given is not None:
        base = given
    else:
        base = root.logger if root.logger is not None else logging.getLogger(str(root.path) or "experiment")
    return base.getChild(path) if path and isinstance(base, logging.Logger) else base


def _child(
    root: logging.Logger | logging.LoggerAdapter[Any] | None, path: str, name: str
) -> logging.Logger | logging.LoggerAdapter[Any] | None:
    if isinstance(root, logging.Logger):
        return root.getChild(join_paths(path, name))
    return root


def _topological(root: Ingredient) -> list[Ingredient]:
    depth: dict[int, int] = {}
    by_id: dict[int, Ingredient] = {}
    for ingredient, level in root.traverse_ingredients():
        by_id[id(ingredient)] = ingredient
        depth[id(ingredient)] = max(depth.get(id(ingredient), 0), level)
    return sorted(by_id.values(), key=lambda ingredient: -depth[id(ingredient)])


def _best_match(path: str, paths: list[list[str]]) -> tuple[str, str]:
    parts = path.split(".")
    for prefix in paths:
        if len(prefix) <= len(parts) and prefix == parts[: len(prefix)]:
            return ".".join(prefix), ".".join(parts[len(prefix) :])
    return "", path


def assemble(
    root: Ingredient,
    config_updates: Mapping[str, Any] | None = None,
    named_configs: Sequence[str] = (),
    *,
    command_name: str = "main",
    extra: Sequence[Configuration] = (),
    force: bool = False,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> Assembled:
    """Evaluate the config of a run of ``root`` (an experiment).

    Args:
        root: The experiment.
        config_updates: Fixed values; dotted keys address nested entries and ingredients.
        named_configs: Names (``NAME`` or ``ingredient.NAME``) or config file paths, in order.
        command_name: Passed to config hooks.
        extra: Configurations evaluated before the experiment's own scopes (the main
            function's parameter defaults).
        force: Accept entries no config defines and no captured function reads.
        log: Where warnings about suspicious changes go.

    Raises:
        ConfigError: an unknown named config, or an entry nothing defines or reads.
    """
    given_log, log = log, log or logger
    ingredients = _topological(root)
    scaffolds: dict[str, _Scaffold] = {}
    built: dict[int, _Scaffold] = {}
    for ingredient in ingredients:
        is_root = ingredient is root
        scaffold = _Scaffold(
            ingredient=ingredient,
            path="" if is_root else str(ingredient.path),
            configurations=[*extra, *ingredient.configurations]
            if is_root
            else list(ingredient.configurations),
            subrunners={built[id(sub)].path: built[id(sub)] for sub in ingredient.ingredients},
            generate_seed=is_root,
            logger=_scope_logger(root, "" if is_root else str(ingredient.path), given_log),
        )
        if scaffold.path in scaffolds:
            raise ConfigError(f"two ingredients share the path {scaffold.path!r}")
        scaffolds[scaffold.path] = built[id(ingredient)] = scaffold
    paths = sorted((path.split(".") for path in scaffolds if path), key=len, reverse=True)

    def distribute(updates: Mapping[str, Any], target: str, base: str = "") -> None:
        for path, value in flatten_items(updates):
            name, suffix = _best_match(join_paths(base, path), paths)
            set_by_path(getattr(scaffolds[name], target), suffix, value)

    _check_keys(config_updates or {})
    updates = nest(config_updates or {})
    distribute(updates, "updates")
    for named in named_configs:  # phase 2: named configs become fixed updates
        if os.path.isfile(named):
            path, name = "", named
        else:
            path, _, name = named.rpartition(".")
            if path not in scaffolds:
                raise NamedConfigNotFoundError(f"no ingredient {path!r} for the named config {named!r}")
        scaffold = scaffolds[path]
        scaffold.gather_fallbacks()
        evaluated = scaffold.evaluate_named(name)
        distribute(evaluated, "presets", scaffold.path)
        for key, value in flatten_items(evaluated):
            set_by_path(updates, join_paths(scaffold.path, key), value)
    distribute(updates, "updates")
    for scaffold in scaffolds.values():  # phase 3: the config scopes
        scaffold.gather_fallbacks()
        try:
            scaffold.set_up_config()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"the config of {scaffold.path or 'the experiment'} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if scaffold.ingredient.config_hooks:
            hooked: dict[str, Any] = {}
            whole = _configuration(scaffolds)
            for hook in scaffold.ingredient.config_hooks:
                _recursive_update(hooked, hook(copy.deepcopy(whole), command_name, log) or {})
            _recursive_update(hooked, scaffold.updates)
            _recursive_update(scaffold.config, hooked)
    for scaffold in reversed(list(scaffolds.values())):  # phase 4: seeds
        scaffold.set_up_seed()
    mods = ConfigSummary()
    for path, scaffold in scaffolds.items():
        mods.merge(scaffold.mods, path)
    for scaffold in scaffolds.values():
        _check_changes(scaffold, force, log)
    return Assembled(_configuration(scaffolds), mods, scaffolds, list(named_configs))


def _configuration(scaffolds: dict[str, _Scaffold]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path, scaffold in reversed(list(scaffolds.items())):
        if not scaffold.config:
            continue
        if path:
            set_by_path(config, path, scaffold.config)
        else:
            config.update(scaffold.config)
    return config


def _recursive_update(target: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if isinstance(value, Mapping):
            current = target.get(key)
            target[key] = _recursive_update(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = value
    return target


def _check_changes(
    scaffold: _Scaffold, force: bool, log: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    captured = scaffold.captured_arguments()
    for added in sorted(scaffold.mods.added):
        if set(prefixes(added)) & captured:
            log.warning('Added new config entry: "%s"', added)
        elif not force:
            full = join_paths(scaffold.path, added)
            known = ", ".join(sorted(key for key in scaffold.config if key != added.split(".")[0])) or "none"
            raise ConfigAddedError(
                f"unknown config key {full!r}: no config defines it and no captured function reads it "
                f"(known: {known}; -f/--force adds it anyway)"
            )
    for key, (old, new) in sorted(scaffold.mods.typechanged.items()):
        if not (old in (int, float) and new in (int, float)):
            log.warning('Changed type of config entry "%s" from %s to %s', key, old.__name__, new.__name__)
    for summary in scaffold.summaries:
        for key in sorted(summary.ignored_fallbacks):
            log.warning('Ignored attempt to set value of "%s", because it is an ingredient.', key)


def captured_functions(root: Ingredient) -> list[CapturedFunction]:
    """Every captured function of the experiment and its ingredients."""
    return [
        function
        for ingredient, _ in root.traverse_ingredients()
        for function in ingredient.captured_functions
    ]
