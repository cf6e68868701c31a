# ruff: noqa: F841  (a config scope's local variables are the config entries)
"""Sacred-style experiments run as Prefect flows: the flow's parameters, commands, hooks, records."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred import Experiment, FileStorageObserver, Ingredient
from prefect_sacred.testing import InMemoryObserver


def greeting(observer: Any = None) -> Experiment:
    ex = Experiment("greeting")
    if observer is not None:
        ex.observers.append(observer)

    @ex.config
    def cfg():  # type: ignore[no-untyped-def]
        recipient = "world"  # who is greeted
        message = f"Hello {recipient}!"
        times = 2  # how often
        ratio = 0.5
        tags = ["a"]

    @ex.named_config
    def formal():  # type: ignore[no-untyped-def]
        recipient = "Sir"
        message = f"Good day, {recipient}."

    @ex.capture
    def shout(message):  # type: ignore[no-untyped-def]
        return message.upper()

    @ex.main
    def greet(times, _run, retries: int = 1):  # type: ignore[no-untyped-def]
        """Greet someone.

        Args:
            retries: how often to try.
        """
        print(shout())
        return shout() * times

    return ex


def test_the_flow_form_shows_each_entry_with_type_default_and_doc() -> None:
    ex = greeting()
    properties = ex.flow.parameters.model_dump()["properties"]
    assert list(properties) == [
        "retries",
        "recipient",
        "message",
        "times",
        "ratio",
        "tags",
        "seed",
        "named_configs",
    ]
    assert properties["recipient"] == {
        "default": "world",
        "description": "who is greeted",
        "position": 1,
        "title": "recipient",
        "type": "string",
    }
    assert properties["times"]["type"] == "integer" and properties["times"]["description"] == "how often"
    assert properties["ratio"]["type"] == "number" and properties["tags"]["type"] == "array"
    assert (
        properties["retries"]["type"] == "integer"
        and properties["retries"]["description"] == "how often to try."
    )
    assert properties["seed"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert properties["seed"]["default"] is None
    assert properties["named_configs"]["items"] == {"type": "string", "enum": ["formal"]}


def test_every_default_of_the_form_is_valid_for_its_own_schema() -> None:
    """What the UI's custom-run form checks before it submits: None under ``seed`` was refused."""
    import jsonschema

    ex = greeting()
    ex.add_config(optional=None, nested={"a": [1, 2]}, flag=True)
    schema = ex.flow.parameters.model_dump()
    for prop in schema["properties"].values():
        jsonschema.validate(prop["default"], prop)  # raises naming the parameter's problem
    jsonschema.validate({name: prop["default"] for name, prop in schema["properties"].items()}, schema)


def test_a_docstring_in_a_config_scope_is_an_entry_and_the_forms_description_not_a_parameter() -> None:
    ex = Experiment("documented")

    @ex.config
    def cfg() -> None:
        """Trains the model on the toy data."""
        lr = 0.1
        _private = 3

    @ex.main
    def train(lr: float, _config: dict[str, Any]) -> float:
        return lr * _config["_private"]

    assert list(ex.flow.parameters.model_dump()["properties"]) == ["lr", "seed"]
    assert ex.flow.description == "Trains the model on the toy data."
    run = ex.run(config_updates={"_private": 4})
    assert run.config["__doc__"] == "Trains the model on the toy data."
    assert run.result == pytest.approx(0.4)


def test_a_config_added_after_the_main_function_reaches_the_form() -> None:
    ex = greeting()
    ex.add_config(volume=11)
    assert ex.flow.parameters.model_dump()["properties"]["volume"]["default"] == 11


def test_flow_parameters_are_config_updates_and_derived_entries_follow() -> None:
    observer = InMemoryObserver()
    ex = greeting(observer)
    # As a deployment calls it: the form's other fields arrive with their defaults.
    assert ex.flow(recipient="you", message="Hello world!", times=1) == "HELLO YOU!"
    config = observer.run["config"]
    assert config["message"] == "Hello you!" and config["times"] == 1 and isinstance(config["seed"], int)
    # Sacred's meaning: only what was updated (replayed in Sacred, the derived message follows).
    assert observer.run["meta"]["config_updates"] == {"recipient": "you", "times": 1}
    ex.flow(recipient="you", seed=7)
    assert observer.run["meta"]["config_updates"] == {"recipient": "you", "seed": 7}
    assert ex.flow(named_configs=["formal"]) == "GOOD DAY, SIR." * 2
    assert observer.run["meta"]["named_configs"] == ["formal"]


def test_records_hold_sacreds_meta_and_only_the_users_info() -> None:
    observer = InMemoryObserver()
    ex = greeting(observer)
    run = ex.run(config_updates={"recipient": "you", "seed": 5}, named_configs=["formal"], info={"note": 1})
    assert run.result == "GOOD DAY, YOU." * 2
    meta = observer.run["meta"]
    assert meta["command"] == "greet" and meta["named_configs"] == ["formal"]
    assert meta["config_updates"] == {"recipient": "you", "seed": 5}
    assert meta["options"]["--force"] is False and meta["options"]["UPDATE"] == []
    assert meta["prefect"]["flow_run_id"]
    assert observer.run["info"] == {"note": 1}  # no prefect_state in it
    assert observer.run["config"]["seed"] == 5


def test_commands_run_as_observed_flows_and_hooks_run_around_main() -> None:
    observer = InMemoryObserver()
    calls: list[str] = []
    data = Ingredient("data")

    @data.config
    def data_cfg():  # type: ignore[no-untyped-def]
        size = 3

    @data.pre_run_hook
    def prepare(size):  # type: ignore[no-untyped-def]
        calls.append(f"prepare {size}")

    ex = Experiment("hooks", ingredients=[data])
    ex.observers.append(observer)

    @ex.post_run_hook
    def report(_run):  # type: ignore[no-untyped-def]
        calls.append(f"report {_run.result}")

    @ex.command
    def evaluate(data, _log):  # type: ignore[no-untyped-def]
        _log.info("evaluating")
        calls.append("evaluate")
        return data["size"] * 2

    @ex.main
    def main():  # type: ignore[no-untyped-def]
        calls.append("main")
        return 1

    assert ex.run("evaluate").result == 6
    assert observer.run["command"] == "evaluate" and observer.run["meta"]["command"] == "evaluate"
    assert calls == ["prepare 3", "evaluate", "report 6"]


def test_print_config_and_help_commands(capsys: pytest.CaptureFixture[str]) -> None:
    ex = greeting()
    ex.run_commandline(["print_config", "with", "formal", "recipient=you"])
    out = capsys.readouterr().out
    assert "\x1b[34m  message = 'Good day, you.'\x1b[0m" in out  # modified: blue
    assert "recipient = 'you'" in out and "# who is greeted" in out
    with pytest.raises(SystemExit):
        ex.run_commandline(["help", "greet"])
    assert "Greet someone." in capsys.readouterr().out


def test_save_config_writes_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ex = greeting()
    ex.run("save_config", config_updates={"recipient": "file", "seed": 2})
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["message"] == "Hello file!" and saved["seed"] == 2


def test_the_experiment_logger_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    ex = Experiment("logged")
    ex.logger = logging.getLogger("my.experiment")

    @ex.main
    def main(_log):  # type: ignore[no-untyped-def]
        _log.warning("from main")

    with caplog.at_level(logging.INFO, logger="my.experiment"):
        ex.run(options={"--unobserved": True})
    assert any(
        record.name == "my.experiment.main" and record.message == "from main" for record in caplog.records
    )


def test_the_run_spans_the_main_function(tmp_path: Path) -> None:
    import time

    ex = Experiment("timed")
    ex.observers.append(FileStorageObserver(str(tmp_path)))

    @ex.main
    def main():  # type: ignore[no-untyped-def]
        time.sleep(0.3)

    ex.run()
    record = json.loads((tmp_path / "1" / "run.json").read_text())
    from datetime import datetime

    span = datetime.fromisoformat(record["stop_time"]) - datetime.fromisoformat(record["start_time"])
    # It ends when main returns (before the final beat and Prefect's completion, 2 s before);
    # it starts with started_event, a few hundred ms before Prefect calls the flow body.
    assert 0.3 <= span.total_seconds() < 1.5, span
    assert not (tmp_path / "1" / "info.json").exists()


def test_unsupported_sacred_features_say_what_to_do_instead() -> None:
    with pytest.raises(NotImplementedError, match="additional_host_info is not supported: name environment"):
        Experiment("x", additional_host_info=[object()])
    with pytest.raises(NotImplementedError, match="additional_cli_options are not supported: register"):
        Experiment("x", additional_cli_options=[object()])
    with pytest.raises(KeyError, match="option_hook functions must have an argument called 'options'"):
        Experiment("x").option_hook(lambda opts: None)


def test_print_dependencies_lists_what_the_module_imports(capsys: pytest.CaptureFixture[str]) -> None:
    ex = greeting()
    ex.add_package_dependency("my-private-package", "1.2")
    ex.run("print_dependencies")
    out = capsys.readouterr().out
    # This module imports pytest and prefect_sacred: those, numpy (Sacred's rule), the added one.
    packages = [line.split("==")[0].strip() for line in out.split("Sources:")[0].splitlines()[1:] if line]
    assert packages == ["my-private-package", "numpy", "prefect-sacred", "pytest"]
    assert "test_runs.py" in out.split("Sources:")[1]
