"""Sacred's names as Sacred scripts use them: ``SETTINGS``, the read-only config, and the module
paths they import (``sacred.commands``, ``sacred.arg_parser``, ``sacred.randomness``...)."""

from __future__ import annotations

import copy
import importlib
import json
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_sacred
from prefect_sacred import SETTINGS, Experiment, FileStorageObserver, SacredError
from prefect_sacred.settings import SettingError
from prefect_sacred.testing import InMemoryObserver


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test starts from the defaults and leaves them as they were."""
    saved = {
        (group, key): copy.deepcopy(value)
        for group in ("CONFIG", "HOST_INFO", "COMMAND_LINE")
        for key, value in SETTINGS[group].items()
    }
    top = {key: SETTINGS[key] for key in SETTINGS if not isinstance(SETTINGS[key], type(SETTINGS))}
    yield
    for (group, key), value in saved.items():
        SETTINGS[group][key] = value
    for key, value in top.items():
        SETTINGS[key] = value


def tiny(name: str = "names") -> Experiment:
    ex = Experiment(name)

    @ex.config
    def cfg() -> None:
        layers = [1, 2]  # noqa: F841
        optimizer = {"lr": 0.1}  # noqa: F841

    @ex.main
    def main(layers: Any, optimizer: Any, _run: Any) -> Any:
        print("hello")
        return {"layers": layers, "optimizer": optimizer}

    return ex


# --- SETTINGS ----------------------------------------------------------------------------------------


def test_settings_have_sacreds_tree_and_both_ways_of_access() -> None:
    assert SETTINGS.CAPTURE_MODE == SETTINGS["CAPTURE_MODE"] == "fd"
    assert SETTINGS.CONFIG.READ_ONLY_CONFIG is True and SETTINGS["CONFIG"]["READ_ONLY_CONFIG"] is True
    assert SETTINGS.HOST_INFO.INCLUDE_GPU_INFO is True and SETTINGS.HOST_INFO.CAPTURED_ENV == []
    assert SETTINGS.DISCOVER_SOURCES == "imported" and SETTINGS.DISCOVER_DEPENDENCIES == "imported"
    assert SETTINGS.DEFAULT_BEAT_INTERVAL == 10.0
    assert set(SETTINGS) == {
        "CONFIG",
        "HOST_INFO",
        "COMMAND_LINE",
        "CAPTURE_MODE",
        "DISCOVER_DEPENDENCIES",
        "DISCOVER_SOURCES",
        "DEFAULT_BEAT_INTERVAL",
    }
    SETTINGS["CAPTURE_MODE"] = "sys"
    assert SETTINGS.CAPTURE_MODE == "sys"


@pytest.mark.parametrize(
    ("assign", "said"),
    [
        (lambda: setattr(SETTINGS, "CAPTURE_MOD", "sys"), "unknown setting SETTINGS.CAPTURE_MOD"),
        (lambda: setattr(SETTINGS, "CAPTURE_MODE", "tee"), "must be one of 'fd', 'sys', 'no'"),
        (lambda: setattr(SETTINGS, "CONFIG", {}), "SETTINGS.CONFIG is a group of settings"),
        (lambda: setattr(SETTINGS.CONFIG, "READ_ONLY_CONFIG", "yes"), "must be a bool"),
        (lambda: setattr(SETTINGS.HOST_INFO, "CAPTURED_ENV", "HOME"), "must be a list of strings"),
        (lambda: setattr(SETTINGS, "DISCOVER_SOURCES", "all"), "'none', 'imported', 'sys', 'dir'"),
        (
            lambda: setattr(SETTINGS.CONFIG, "ENFORCE_KEYS_MONGO_COMPATIBLE", False),
            "not supported by prefect-sacred: the MongoObserver makes keys MongoDB can store itself",
        ),
        (lambda: SETTINGS.COMMAND_LINE.VERBOSE, "unknown setting SETTINGS.COMMAND_LINE.VERBOSE"),
    ],
)
def test_a_setting_that_cannot_be_is_one_line_saying_why(assign: Any, said: str) -> None:
    with pytest.raises(SettingError) as caught:
        assign()
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_capture_mode_and_beat_interval_settings_apply_to_experiments_made_before() -> None:
    ex = tiny()
    SETTINGS.CAPTURE_MODE = "no"
    SETTINGS.DEFAULT_BEAT_INTERVAL = 2.5
    observer = InMemoryObserver()
    ex.observers.append(observer)
    run = ex.run()
    assert (run.capture_mode, run.beat_interval) == ("no", 2.5)
    assert run.captured_out == ""  # nothing captured
    ex.capture_mode = "sys"  # the experiment's own choice wins
    assert ex.run().captured_out == "hello\n"


def test_host_info_settings_choose_what_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMES_TEST_VAR", "kept")
    SETTINGS.HOST_INFO.INCLUDE_CPU_INFO = False
    SETTINGS.HOST_INFO.INCLUDE_GPU_INFO = False
    SETTINGS.HOST_INFO.CAPTURED_ENV = ["NAMES_TEST_VAR"]
    observer = InMemoryObserver()
    ex = tiny()
    ex.observers.append(observer)
    ex.run()
    host = observer.run["host"]
    assert "cpu" not in host and "gpus" not in host
    assert host["ENV"] == {"NAMES_TEST_VAR": "kept"}


def test_discover_sources_none_keeps_only_the_main_file_and_dir_takes_every_file(tmp_path: Path) -> None:
    (tmp_path / "helper_never_imported.py").write_text("X = 1\n")
    (tmp_path / "exp.py").write_text("from prefect_sacred import Experiment\nex = Experiment('found')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("exp")
        ex = module.ex
        SETTINGS.DISCOVER_SOURCES = "dir"
        assert sorted(name for name, _ in ex.experiment_info()["sources"]) == [
            "exp.py",
            "helper_never_imported.py",
        ]
        SETTINGS.DISCOVER_SOURCES = "none"
        assert [name for name, _ in ex.experiment_info()["sources"]] == ["exp.py"]
        SETTINGS.DISCOVER_DEPENDENCIES = "none"
        assert [dep.split("==")[0] for dep in ex.experiment_info()["dependencies"]] == ["numpy"]
        SETTINGS.DISCOVER_DEPENDENCIES = "pkg"
        assert any(dep.startswith("prefect==") for dep in ex.experiment_info()["dependencies"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("exp", None)


def test_an_ingredients_own_file_is_a_source_even_outside_the_experiments_directory(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "data_ingredient.py").write_text(
        "from prefect_sacred import Ingredient\ndata = Ingredient('data')\n"
    )
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "train.py").write_text(
        "from prefect_sacred import Experiment\nfrom data_ingredient import data\n"
        "ex = Experiment('train', ingredients=[data])\n"
    )
    sys.path[:0] = [str(tmp_path / "lib"), str(tmp_path / "app")]
    try:
        ex = importlib.import_module("train").ex
        sources = dict(ex.experiment_info()["sources"])
        assert set(sources) == {"train.py", "../lib/data_ingredient.py"}
    finally:
        del sys.path[:2]
        sys.modules.pop("train", None)
        sys.modules.pop("data_ingredient", None)


def test_strict_parsing_refuses_a_value_that_is_no_literal() -> None:
    from prefect_sacred.flows.commandline import parse_value
    from prefect_sacred.flows.options import UsageError

    assert parse_value("adam") == "adam"
    SETTINGS.COMMAND_LINE.STRICT_PARSING = True
    with pytest.raises(UsageError, match="'adam' is not a Python or JSON literal"):
        parse_value("adam")
    assert parse_value("'adam'") == "adam"


def test_ignored_comments_are_not_docs() -> None:
    SETTINGS.CONFIG.IGNORED_COMMENTS = ["^pylint:", "^todo"]
    ex = Experiment("comments")

    @ex.config
    def cfg() -> None:
        a = 1  # todo: tune it  # noqa: F841
        b = 2  # the b  # noqa: F841

    docs = ex.assemble().mods.docs
    assert "a" not in docs and docs["b"].startswith("the b")


def test_the_legacy_numpy_api_gives_random_state() -> None:
    numpy = pytest.importorskip("numpy")
    ex = Experiment("rnd")

    @ex.main
    def main(_rnd: Any) -> str:
        return type(_rnd).__name__

    assert ex.run().result == "Generator"
    SETTINGS.CONFIG.NUMPY_RANDOM_LEGACY_API = True
    assert ex.run().result == "RandomState" and numpy is not None


# --- the read-only config ----------------------------------------------------------------------------


def test_the_config_is_read_only_in_captured_functions_as_in_sacred(tmp_path: Path) -> None:
    ex = tiny()
    said: list[str] = []

    @ex.capture
    def grow(layers: Any, optimizer: Any, _config: Any) -> None:
        for change in (
            lambda: layers.append(3),
            lambda: optimizer.update(lr=1),
            lambda: _config.pop("layers"),
            lambda: optimizer.__setitem__("lr", 1),
        ):
            with pytest.raises(SacredError) as caught:
                change()
            said.append(str(caught.value))
        mine = copy.deepcopy(optimizer)  # a copy is the user's to change
        mine["lr"] = 1
        assert type(dict(layers=layers)["layers"]) is not list  # still read-only inside

    ex.pre_run_hook(grow)
    ex.observers.append(FileStorageObserver(tmp_path))
    run = ex.run()
    assert said == ["The configuration is read-only in a captured function!"] * 4
    assert run.config["layers"] == [1, 2]
    # The result holds the read-only containers; the record holds plain JSON, as Sacred's.
    recorded = json.loads((tmp_path / "1" / "run.json").read_text())["result"]
    assert recorded == {"layers": [1, 2], "optimizer": {"lr": 0.1}}


def test_read_only_config_can_be_turned_off() -> None:
    SETTINGS.CONFIG.READ_ONLY_CONFIG = False
    ex = tiny()

    @ex.capture
    def grow(layers: Any) -> None:
        layers.append(3)

    ex.pre_run_hook(grow)
    assert ex.run().result["layers"] == [1, 2, 3]


# --- module paths ------------------------------------------------------------------------------------


def test_sacreds_module_paths_have_their_names() -> None:
    from prefect_sacred.arg_parser import get_config_updates
    from prefect_sacred.commands import print_config, print_dependencies, save_config
    from prefect_sacred.config.custom_containers import ReadOnlyDict, ReadOnlyList
    from prefect_sacred.randomness import create_rnd, get_seed, set_global_seed
    from prefect_sacred.run import Run
    from prefect_sacred.stflow import LogFileWriter
    from prefect_sacred.utils import apply_backspaces_and_linefeeds

    assert get_config_updates(["lr=0.1", "model.depth=3", "name=adam", "big", ""]) == (
        {"lr": 0.1, "model": {"depth": 3}, "name": "adam"},
        ["big"],
    )
    assert callable(print_config) and callable(print_dependencies) and callable(save_config)
    assert isinstance(ReadOnlyDict({"a": 1}), dict) and isinstance(ReadOnlyList([1]), list)
    set_global_seed(7)
    first = random.random()
    set_global_seed(7)
    assert random.random() == first
    assert get_seed(create_rnd(1)) == get_seed(create_rnd(1))
    assert Run is prefect_sacred.Run and LogFileWriter is not None
    assert apply_backspaces_and_linefeeds("50%\r100%") == "100%"


@pytest.mark.parametrize(
    ("statement", "advice"),
    [
        ("from prefect_sacred import host_info_getter", "_run.info"),
        ("from prefect_sacred import cli_option", "register_observer_option"),
        ("from prefect_sacred.initialize import create_run", "ex.run(...)"),
    ],
)
def test_sacred_names_we_do_not_have_say_what_to_use_in_one_line(statement: str, advice: str) -> None:
    with pytest.raises(ImportError) as caught:
        exec(statement, {})
    assert advice in str(caught.value) and "\n" not in str(caught.value)


def test_log_file_writer_records_tensorflows_log_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_sacred.stflow import LogFileWriter

    made: list[str] = []
    fake_tf = types.ModuleType("tensorflow")
    fake_tf.summary = types.SimpleNamespace(create_file_writer=lambda logdir: made.append(logdir) or logdir)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    ex = Experiment("tf")

    @ex.main
    def main(_run: Any) -> Any:
        with LogFileWriter(ex):
            fake_tf.summary.create_file_writer("/tmp/logs/a")  # type: ignore[attr-defined]
            fake_tf.summary.create_file_writer("/tmp/logs/b")  # type: ignore[attr-defined]
        fake_tf.summary.create_file_writer("/tmp/logs/after")  # type: ignore[attr-defined]
        return _run.info.get("tensorflow")

    assert ex.run().result == {"logdirs": ["/tmp/logs/a", "/tmp/logs/b"]}
    assert made == ["/tmp/logs/a", "/tmp/logs/b", "/tmp/logs/after"]


# --- the experiment's lifecycle, as in Sacred ---------------------------------------------------------


def test_option_hooks_see_every_option_and_what_they_change_takes_effect() -> None:
    ex = tiny()
    seen: list[dict[str, Any]] = []

    @ex.option_hook
    def hook(options: dict[str, Any]) -> None:
        seen.append(dict(options))
        options["--comment"] = "set by the hook"
        options["--capture"] = "sys"

    observer = InMemoryObserver()
    ex.observers.append(observer)
    run = ex.run(options={"--name": "renamed"})
    assert seen[0]["--name"] == "renamed" and seen[0]["--comment"] is None and seen[0]["--debug"] is False
    assert observer.run["meta"]["comment"] == "set by the hook"
    assert run.capture_mode == "sys" and observer.run["experiment"]["name"] == "renamed"


def test_current_run_is_the_live_run_then_the_last_one() -> None:
    ex = Experiment("current")
    inside: list[Any] = []

    @ex.main
    def main(_run: Any) -> int:
        inside.append(ex.current_run is _run)
        return 1

    assert ex.current_run is None
    run = ex.run()
    assert inside == [True] and ex.current_run is run


def test_a_config_scope_gets_log_as_in_sacred(caplog: pytest.LogCaptureFixture) -> None:
    ex = Experiment("scoped_log")

    @ex.config
    def cfg(_log: Any) -> None:
        recipient = "world"
        _log.warning("configuring for %s", recipient)

    @ex.main
    def main(recipient: str) -> str:
        return f"Hello {recipient}!"

    with caplog.at_level("WARNING", logger="scoped_log"):
        assert ex.run().result == "Hello world!"
    assert [r.getMessage() for r in caplog.records if r.name == "scoped_log"] == ["configuring for world"]
    assert "_log" not in ex.run().config


def test_captured_functions_keep_the_last_runs_config_after_it() -> None:
    ex = tiny()

    @ex.capture
    def depth(layers: Any) -> int:
        return len(layers)

    ex.run(config_updates={"layers": [1, 2, 3]})
    assert depth() == 3  # Sacred keeps the last run's config for calls after it
    assert depth(layers=[1]) == 1


def test_captured_output_without_observers() -> None:
    ex = tiny()
    assert ex.run().captured_out == "hello\n"
    assert ex.run(options={"-C": "sys"}).captured_out == "hello\n"


def test_automain_returns_so_the_script_goes_on(tmp_path: Path) -> None:
    import subprocess

    from tests.support import PYTHON, subprocess_env

    script = tmp_path / "auto.py"
    script.write_text(
        "from prefect_sacred import Experiment\n"
        "ex = Experiment('auto')\n"
        "@ex.automain\n"
        "def main():\n"
        "    return 42\n"
        "print('after automain:', ex.current_run.result)\n"
    )
    done = subprocess.run(
        [PYTHON, str(script)], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "after automain: 42" in done.stdout


def test_the_same_seed_gives_sacreds_draws_from_random_and_numpy_whatever_runs_beside(tmp_path: Path) -> None:
    """In a fresh process: numpy imported only inside main is seeded too (Sacred imports it at
    its own import), and Prefect's event websocket, connecting and pinging in the background,
    no longer draws from the global random."""
    import subprocess

    pytest.importorskip("numpy")
    from sacred import Experiment as SacredExperiment

    from tests.support import PYTHON, subprocess_env

    def body() -> list[float]:
        import numpy as np

        return [random.random(), float(np.random.rand())]

    sacred_ex = SacredExperiment("draws", interactive=True)
    sacred_ex.main(lambda: body())
    expected = sacred_ex.run(config_updates={"seed": 1}).result

    script = tmp_path / "draws.py"
    script.write_text(
        "import json, random, time\n"
        "from prefect_sacred import Experiment, FileStorageObserver\n"
        "ex = Experiment('draws')\n"
        f"ex.observers.append(FileStorageObserver({str(tmp_path / 'runs')!r}))\n"
        "@ex.main\n"
        "def main(_run):\n"
        "    _run.log_scalar('x', 1)\n"
        "    time.sleep(2.0)  # the heartbeat and Prefect's event worker run meanwhile\n"
        "    import numpy as np\n"
        "    return [random.random(), float(np.random.rand())]\n"
        "print('DRAWS', json.dumps(ex.run(config_updates={'seed': 1}, options={'-b': 0.2}).result))\n"
    )
    done = subprocess.run(
        [PYTHON, str(script)], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("DRAWS ")]
    assert json.loads(line.removeprefix("DRAWS ")) == expected


def test_config_errors_have_sacreds_types_and_updates_keep_tuples() -> None:
    from prefect_sacred.utils import ConfigAddedError, NamedConfigNotFoundError, UsageError

    ex = tiny()
    with pytest.raises(ConfigAddedError, match="unknown config key 'dropout'") as added:
        ex.run(config_updates={"dropout": 0.5})
    with pytest.raises(NamedConfigNotFoundError, match="no named config 'large'") as named:
        ex.run(named_configs=["large"])
    for caught in (added.value, named.value):  # Sacred's base class, and ours for the command line
        assert isinstance(caught, SacredError) and isinstance(caught, UsageError)
    run = ex.run(config_updates={"layers": (3, 4), "optimizer.betas": (0.9, 0.99)})
    assert run.result["layers"] == (3, 4) and run.result["optimizer"]["betas"] == (0.9, 0.99)
    assert run.config["layers"] == (3, 4)  # as Sacred gives it; the records store JSON lists


@pytest.mark.parametrize(
    ("updates", "said"), [({"optimizer": {1: "a"}}, "config key 1 in 'optimizer'"), ({2: 3}, "config key 2 ")]
)
def test_a_config_key_that_is_no_string_is_one_clear_line(updates: dict[Any, Any], said: str) -> None:
    from prefect_sacred.utils import ConfigError

    with pytest.raises(ConfigError) as caught:
        tiny().run(config_updates=updates)
    assert said in str(caught.value) and "config keys have to be strings" in str(caught.value)
