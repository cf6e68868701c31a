# ruff: noqa: F841  (a config scope's local variables are the config entries)
"""Side by side with Sacred 0.8.7: the same definitions give the same config, arguments and numbers.

Each experiment is built twice from the same functions, once with ``sacred`` and once with
``prefect_sacred``; nothing here starts a Prefect run (``tests/config/test_runs.py`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import UsageError
from tests.config.sacred_peer import bound, our_experiment, printed, sacred_experiment, sacred_run


def hello_config(Experiment: Any, Ingredient: Any) -> Any:
    ex = Experiment("hello_config")

    @ex.config
    def cfg():  # type: ignore[no-untyped-def]
        recipient = "world"  # who is greeted
        # the whole greeting
        message = "Hello {}!".format(recipient)  # noqa: UP032
        shape = (2, 3)
        nested = {"depth": 1, "inner": {"width": 4}}

    @ex.config
    def derived(message):  # type: ignore[no-untyped-def]
        shout = message.upper()

    @ex.named_config
    def formal():  # type: ignore[no-untyped-def]
        """A formal greeting."""
        recipient = "Sir"
        message = "Good day, {}.".format(recipient)  # noqa: UP032

    ex.add_named_config("friendly", {"recipient": "pal"})
    ex.add_config(volume=3)

    @ex.main
    def greet(message, volume, _run):  # type: ignore[no-untyped-def]
        return message * volume

    return ex


@pytest.mark.parametrize(
    ("updates", "named"),
    [
        (None, []),
        ({"recipient": "you"}, []),
        ({"message": "Hi!", "nested.inner.width": 9, "shape": 5}, []),
        ({"volume": 1.5, "seed": 11}, ["formal"]),
        ({"recipient": "Madam"}, ["formal", "friendly"]),
    ],
)
def test_config_and_what_changed_match_sacred(updates: dict[str, Any] | None, named: list[str]) -> None:
    theirs = sacred_run(sacred_experiment(hello_config), updates=updates, named=named)
    ours = our_experiment(hello_config).assemble(updates, named)
    expected = dict(theirs.config)
    if "seed" not in (updates or {}):
        expected["seed"] = ours.config["seed"]  # a fresh seed each
    assert ours.config == expected
    assert ours.mods.added == theirs.config_modifications.added
    assert ours.mods.modified == theirs.config_modifications.modified
    assert ours.mods.typechanged == theirs.config_modifications.typechanged
    assert ours.mods.docs == theirs.config_modifications.docs


def test_derived_entries_follow_updates() -> None:
    ex = our_experiment(hello_config)
    config = ex.assemble({"recipient": "you"}).config
    assert config["message"] == "Hello you!" and config["shout"] == "HELLO YOU!"
    config = ex.assemble({"recipient": "you"}, ["formal"]).config
    assert config["message"] == "Good day, you." and config["recipient"] == "you"


def test_print_config_prints_what_sacred_prints() -> None:
    updates = {"recipient": "you", "shape": 5.0, "seed": 3, "nested.added": True}
    sacred_ex = sacred_experiment(hello_config)
    theirs = printed(lambda: sacred_ex.run("print_config", config_updates=updates, options={"--force": True}))
    ex = our_experiment(hello_config)
    ours = printed(lambda: ex.run("print_config", config_updates=updates, options={"--force": True}))
    assert ours == theirs
    assert "\x1b[31m  shape = 5.0\x1b[0m" in ours  # typechanged, red
    assert "\x1b[34m  recipient = 'you'" in ours  # modified, blue, with its doc after it


def test_print_named_configs_prints_what_sacred_prints() -> None:
    theirs = printed(lambda: sacred_experiment(hello_config).run("print_named_configs"))
    ours = printed(lambda: our_experiment(hello_config).run("print_named_configs"))
    assert ours == theirs and "formal" in ours


def captured(Experiment: Any, Ingredient: Any) -> Any:
    ex = Experiment("captured_functions")

    @ex.config
    def cfg():  # type: ignore[no-untyped-def]
        foo = 42
        bar = "baz"
        optimizer = {"lr": 0.1, "momentum": 0.9}

    @ex.capture
    def some_function(a, foo, bar=10):  # type: ignore[no-untyped-def]
        return a, foo, bar

    @ex.capture(prefix="optimizer")
    def make_optimizer(lr, momentum, nesterov=False):  # type: ignore[no-untyped-def]
        return lr, momentum, nesterov

    @ex.capture
    def draw(_seed, _rnd, foo):  # type: ignore[no-untyped-def]
        return _seed, [int(x) for x in _rnd.integers(0, 1000, size=3)], foo

    @ex.main
    def main(_seed, _rnd, _config):  # type: ignore[no-untyped-def]
        return _seed, int(_rnd.integers(0, 10**6)), sorted(_config)

    ex.functions = {"some_function": some_function, "make_optimizer": make_optimizer, "draw": draw}
    ex.functions["main"] = getattr(ex, "_main", None) or main  # ours returns the flow
    return ex


@pytest.mark.parametrize("seed", [3, 12345, 987654321])
def test_captured_functions_get_sacreds_arguments_and_random_numbers(seed: int) -> None:
    sacred_ex = sacred_experiment(captured)
    sacred_run(sacred_ex, updates={"seed": seed, "bar": "qux"})
    theirs = sacred_ex.functions
    ex = our_experiment(captured)
    with bound(ex, {"seed": seed, "bar": "qux"}):
        mine = ex.functions  # type: ignore[attr-defined]
        for name in ("some_function",):
            assert mine[name](1) == theirs[name](1) == (1, 42, "qux")
            assert mine[name](1, foo=0, bar=2) == theirs[name](1, foo=0, bar=2)
        assert mine["make_optimizer"]() == theirs["make_optimizer"]() == (0.1, 0.9, False)
        # each call draws a new seed from the function's own generator, as in Sacred
        assert [mine["draw"]() for _ in range(3)] == [theirs["draw"]() for _ in range(3)]
        assert mine["main"]() == theirs["main"]()


def test_a_missing_argument_is_named() -> None:
    ex = our_experiment(captured)
    with bound(ex), pytest.raises(TypeError, match="some_function is missing value\\(s\\) for a"):
        ex.functions["some_function"]()  # type: ignore[attr-defined]


def ingredients(Experiment: Any, Ingredient: Any) -> Any:
    stats = Ingredient("stats")

    @stats.config
    def stats_cfg():  # type: ignore[no-untyped-def]
        mean = 0.5
        bins = 10

    @stats.capture
    def sample(mean, _rnd):  # type: ignore[no-untyped-def]
        return mean, float(_rnd.random())

    data = Ingredient("dataset", ingredients=[stats])

    @data.config
    def data_cfg():  # type: ignore[no-untyped-def]
        filename = "train.csv"
        normalize = True

    @data.named_config
    def small():  # type: ignore[no-untyped-def]
        filename = "small.csv"

    @data.capture
    def load(filename, normalize, _seed):  # type: ignore[no-untyped-def]
        return filename, normalize, _seed

    @data.command
    def describe(filename):  # type: ignore[no-untyped-def]
        return f"dataset {filename}"

    ex = Experiment("ingredients", ingredients=[data])

    @ex.config
    def cfg(dataset):  # type: ignore[no-untyped-def]
        epochs = 3
        tag = dataset["filename"].replace(".csv", "")

    @ex.main
    def main(epochs, _rnd):  # type: ignore[no-untyped-def]
        return epochs, float(_rnd.random())

    ex.functions = {"sample": sample, "load": load, "main": getattr(ex, "_main", None) or main}
    return ex


@pytest.mark.parametrize(
    ("updates", "named"), [({"seed": 7}, []), ({"seed": 8, "stats.bins": 3}, ["dataset.small"])]
)
def test_ingredients_give_sacreds_config_and_numbers(updates: dict[str, Any], named: list[str]) -> None:
    sacred_ex = sacred_experiment(ingredients)
    theirs = sacred_run(sacred_ex, updates=updates, named=named)
    ex = our_experiment(ingredients)
    with bound(ex, updates, named) as ours:
        assert ours.config == theirs.config
        assert ours.mods.modified == theirs.config_modifications.modified
        for name in ("load", "main"):
            assert ex.functions[name]() == sacred_ex.functions[name](), name  # type: ignore[attr-defined]
        sampled = ex.functions["sample"]()  # type: ignore[attr-defined]
    assert ours.config["tag"] == ours.config["dataset"]["filename"].replace(".csv", "")
    # Sacred draws the seed of an ingredient used by another ingredient from the unseeded
    # global random; here it follows the run's seed like every other.
    with bound(ex, updates, named):
        assert ex.functions["sample"]() == sampled  # type: ignore[attr-defined]


def test_ingredient_commands_are_reached_by_their_dotted_name() -> None:
    ex = our_experiment(ingredients)
    assert "dataset.describe" in dict(ex.gather_commands())
    assert "dataset.small" in dict(ex.gather_named_configs())


def test_config_files_and_dicts(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps({"lr": 0.5, "layers": [3, 4], "wide": False}))
    (tmp_path / "big.yaml").write_text("layers: [8, 8, 8]\nwide: true\n")

    def files(Experiment: Any, Ingredient: Any) -> Any:
        ex = Experiment("files")
        ex.add_config(str(tmp_path / "base.json"))
        ex.add_named_config("big", str(tmp_path / "big.yaml"))

        @ex.main
        def main(lr, layers, wide):  # type: ignore[no-untyped-def]
            return lr

        return ex

    for named in ([], ["big"], [str(tmp_path / "big.yaml")]):
        theirs = sacred_run(sacred_experiment(files), updates={"seed": 1}, named=named)
        assert our_experiment(files).assemble({"seed": 1}, named).config == theirs.config


def test_bad_config_input_is_one_clear_line(tmp_path: Path) -> None:
    ex = our_experiment(hello_config)
    with pytest.raises(UsageError, match="no named config 'informal' \\(known: formal, friendly\\)"):
        ex.assemble(None, ["informal"])
    scoped = our_experiment(captured)
    with pytest.raises(UsageError, match="unknown config key 'fooo': no config defines it"):
        scoped.assemble({"fooo": "x"})
    assert scoped.assemble({"fooo": "x"}, force=True).config["fooo"] == "x"
    assert scoped.assemble({"a": 1}).config["a"] == 1  # some_function reads it: a new entry is fine
    with pytest.raises(FileNotFoundError, match="config file not found"):
        ex.add_config(str(tmp_path / "missing.json"))
    (tmp_path / "cfg.toml").write_text("a = 1")
    with pytest.raises(ValueError, match=r"unsupported extension '\.toml'"):
        ex.add_config(str(tmp_path / "cfg.toml"))

    def broken():  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(SyntaxError, match="config scope broken: 'return' outside function"):
        ex.config(broken)


def modular(Experiment: Any, Ingredient: Any) -> Any:
    settings = Ingredient("settings")

    @settings.config
    def settings_cfg():  # type: ignore[no-untyped-def]
        verbose = True

    paths = Ingredient("dataset.paths", ingredients=[settings])

    @paths.config
    def paths_cfg(settings):  # type: ignore[no-untyped-def]
        quiet = not settings["verbose"]
        base = "/data/"

    data = Ingredient("dataset", ingredients=[paths, settings])

    @data.config
    def data_cfg(paths):  # type: ignore[no-untyped-def]
        basepath = paths["base"] + "sets/"

    @data.capture
    def where(basepath, paths, settings):  # type: ignore[no-untyped-def]
        return basepath, paths, settings

    ex = Experiment("modular", ingredients=[data, paths])

    @ex.config
    def cfg(dataset):  # type: ignore[no-untyped-def]
        out = dataset["paths"]["base"] + "out/"

    @ex.main
    def main(out, dataset):  # type: ignore[no-untyped-def]
        return out, dataset

    ex.functions = {"where": where, "main": getattr(ex, "_main", None) or main}
    return ex


def test_nested_ingredient_paths_give_sacreds_config_and_arguments() -> None:
    sacred_ex = sacred_experiment(modular)
    theirs = sacred_run(sacred_ex, updates={"seed": 1, "dataset.paths.base": "/mnt/"})
    ex = our_experiment(modular)
    with bound(ex, {"seed": 1, "dataset.paths.base": "/mnt/"}) as ours:
        assert ours.config == theirs.config
        assert ours.config["out"] == "/mnt/out/" and ours.config["dataset"]["basepath"] == "/mnt/sets/"
        for name in ("where", "main"):
            assert ex.functions[name]() == sacred_ex.functions[name](), name  # type: ignore[attr-defined]
