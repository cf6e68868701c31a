"""Sacred's command line: every flag, and bad input refused with status 2 before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_sacred import Experiment
from prefect_sacred.utils import redact
from tests.support import subprocess_env


def make_experiment() -> Experiment:
    ex = Experiment("cli")

    @ex.main
    def train(epochs: int = 3, lr: float = 0.1, optimizer: dict = {"name": "sgd", "momentum": 0.9}) -> dict:  # noqa: B006
        """Train a tiny model."""
        print("training", epochs, lr, optimizer["name"])
        return {"epochs": epochs, "lr": lr, "optimizer": optimizer}

    return ex


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-b", "soon"], "argument -b/--beat-interval: invalid value 'soon'"),
        (["-C", "tee"], "argument -C/--capture: invalid choice 'tee'"),
        (["-P", "high"], "argument -P/--priority: invalid value 'high'"),
        (["with", "epochz=4"], "unknown config key 'epochz': no config defines it and no captured function"),
        (["with", "epochs"], "no named config 'epochs' (known: none), and no config file of that name"),
        (["with", "epochs=many"], "config parameter 'epochs': Input should be a valid integer"),
        (["with", "lr.value=1"], "config parameter 'lr': Input should be a valid number (got {'value': 1})"),
        (["now", "epochs=1"], "unexpected argument 'epochs=1' (config updates follow 'with')"),
        (["now"], "no command 'now' (commands: print_config, print_dependencies, save_config,"),
        (["with", "seed=1", "-l", "LOUD"], "argument -l/--loglevel: invalid level 'LOUD'"),
        (["-F"], "argument -F/--file_storage: expected one argument"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line_and_write_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = make_experiment()
    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline([*argv, "-F", str(tmp_path / "runs")] if argv != ["-F"] else argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_every_run_flag_reaches_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = make_experiment()
    basedir = tmp_path / "runs"
    run = ex.run_commandline(
        [
            "with",
            "epochs=5",
            "optimizer.name=adam",
            "lr=2e-3",
            "-F",
            str(basedir),
            "-i",
            "exp-42",
            "-c",
            "first try",
            "-n",
            "renamed",
            "-P",
            "3",
            "-b",
            "0.5",
            "-C",
            "sys",
            "-p",
        ]
    )
    out = capsys.readouterr().out
    # -p prints Sacred's print_config: updated entries in blue, the dict holding one too.
    assert "\x1b[34m  epochs = 5\x1b[0m" in out
    assert "\x1b[34m    name = 'adam'\x1b[0m" in out and "    momentum = 0.9" in out
    assert f"Run exp-42 (COMPLETED) stored by FileStorageObserver: {basedir / 'exp-42'}" in out
    assert run._id == "exp-42"
    record = json.loads((basedir / "exp-42" / "run.json").read_text())
    assert record["experiment"]["name"] == "renamed"
    assert record["meta"]["comment"] == "first try"
    assert record["meta"]["priority"] == 3.0
    # Sacred's shape: every option, values as given on the command line (strings).
    options = record["meta"]["options"]
    assert options["--beat-interval"] == "0.5" and options["--priority"] == "3"
    assert options["--file_storage"] == str(basedir)
    assert options["--force"] is False and options["--queue"] is False and options["--loglevel"] is None
    assert options["UPDATE"] == ["epochs=5", "optimizer.name=adam", "lr=2e-3"] and options["with"] is True
    assert record["meta"]["command"] == "train" and record["meta"]["named_configs"] == []
    assert record["meta"]["config_updates"] == {"epochs": 5, "lr": 0.002, "optimizer": {"name": "adam"}}
    assert record["meta"]["prefect"]["flow_run_id"]
    assert record["result"] == {"epochs": 5, "lr": 0.002, "optimizer": {"name": "adam", "momentum": 0.9}}
    config = json.loads((basedir / "exp-42" / "config.json").read_text())
    assert config["lr"] == 0.002


def test_unobserved_flag_writes_nothing(tmp_path: Path) -> None:
    ex = make_experiment()
    ex.run_commandline(["-F", str(tmp_path / "runs"), "-u"])
    assert not (tmp_path / "runs").exists()


def test_help_lists_flags_and_config(capsys: pytest.CaptureFixture[str]) -> None:
    ex = make_experiment()
    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "Train a tiny model.",
        "-F BASEDIR, --file_storage BASEDIR",
        "--beat-interval",
        "epochs = 3",
        "optimizer = {'name': 'sgd', 'momentum': 0.9}",
    ):
        assert text in out


def test_a_failing_run_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = Experiment("failing")

    @ex.main
    def main() -> None:
        raise RuntimeError("no data")

    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline(["-F", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "the run failed: RuntimeError: no data" in capsys.readouterr().err


def test_automain_runs_the_command_line_of_a_script(tmp_path: Path) -> None:
    script = tmp_path / "my_experiment.py"
    script.write_text(
        "from prefect_sacred import Experiment\n"
        "ex = Experiment('scripted')\n"
        "@ex.automain\n"
        "def main(x: int = 1):\n"
        "    print('x is', x)\n"
        "    return x * 2\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), "with", "x=21", "-F", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Run 1 (COMPLETED) stored by FileStorageObserver" in done.stdout
    record = json.loads((tmp_path / "runs" / "1" / "run.json").read_text())
    assert record["result"] == 42
    assert record["experiment"]["mainfile"] == "my_experiment.py"
    assert record["experiment"]["sources"][0][0] == "my_experiment.py"
    assert "x is 21" in (tmp_path / "runs" / "1" / "cout.txt").read_text()


def test_loglevel_quiets_prefects_lines_too_and_a_relative_path_is_said_whole(tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text(
        "from prefect_sacred import Experiment\n"
        "ex = Experiment('quiet')\n"
        "@ex.automain\n"
        "def main():\n"
        "    print('the body speaks')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), "-l", "WARNING", "-F", "runs"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "Running hook" not in said and "| INFO" not in said, said
    assert f"Run 1 (COMPLETED) stored by FileStorageObserver: {tmp_path / 'runs' / '1'}" in done.stdout


def test_observer_urls_in_the_environment_choose_observers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SACRED_OBSERVERS", f"file://{tmp_path}/a file://{tmp_path}/b")
    ex = make_experiment()
    ex.run()
    assert (tmp_path / "a" / "1" / "run.json").exists()
    assert (tmp_path / "b" / "1" / "run.json").exists()


def test_a_malformed_observer_setting_exits_2_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_SACRED_OBSERVERS", "file://ok mongodb:/broken-no-slashes")
    ex = make_experiment()
    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline(["-F", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "not an observer URL" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_deployment_run_with_a_malformed_setting_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect_sacred import ObserverError
    from prefect_sacred.testing import InMemoryObserver

    observer = InMemoryObserver()
    ex = make_experiment()
    ex.observers.append(observer)
    monkeypatch.setenv("PREFECT_SACRED_OBSERVERS", "nosuchscheme://x")
    with pytest.raises(ObserverError, match="PREFECT_SACRED_OBSERVERS: no observer for URL scheme"):
        ex.flow()  # as a deployment calls it: no ex.run, observers from code and the environment
    assert observer.run["status"] == "FAILED"
    assert "PREFECT_SACRED_OBSERVERS" in observer.run["fail_trace"][-1]


def test_a_bad_observer_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_sacred import ObserverConfigError
    from prefect_sacred.observers import observer_from_url

    with pytest.raises(ObserverConfigError, match="no observer for URL scheme 'ftp'"):
        observer_from_url("ftp://user:secret@host/x")
    with pytest.raises(ObserverConfigError, match="not an observer URL") as info:
        observer_from_url("user:hunter2@host")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mongodb://alice:s3cret@db:27017/sacred", "mongodb://alice:***@db:27017/sacred"),
        (
            "postgresql+psycopg://bob:p%40ss@h/db?sslmode=require",
            "postgresql+psycopg://bob:***@h/db?sslmode=require",
        ),
        ("https://h/x?token=abc&x=1", "https://h/x?token=***&x=1"),
        ("file:///tmp/runs", "file:///tmp/runs"),
        # A raw "@" inside a query-string password: the part after it is hidden too.
        ("mysql+pymysql://root@h/db?password=x@TopSecret9", "mysql+pymysql://***@***"),
        (
            "postgresql+psycopg://pg@h/db?password=abc@defghij&sslmode=require",
            "postgresql+psycopg://***@***&sslmode=require",
        ),
        ("root:pw@h/db?password=x@Tail9 rest", "root:***@*** rest"),
        ("see mongodb://u:p@h/db?authSource=a@b now", "see mongodb://u:***@b now"),
    ],
)
def test_redact_hides_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_credentials_in_observer_flags_are_not_recorded() -> None:
    from prefect_sacred.flows.options import resolve_options

    options = resolve_options(
        {"--mongo_db": "mongodb://alice:s3cret@db.example:27017/lab", "--sql": "postgresql://bob:pw@h/db"}
    )
    recorded = json.dumps(options.recorded)
    assert "s3cret" not in recorded and ":pw@" not in recorded
    assert options.recorded["--mongo_db"] == "mongodb://alice:***@db.example:27017/lab"
    assert [type(observer).__name__ for observer in options.observers] == ["MongoObserver", "SqlObserver"]


def test_debug_prints_the_whole_traceback_and_force_accepts_a_new_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = Experiment("failing")

    @ex.config
    def cfg():  # type: ignore[no-untyped-def]
        rows = 3  # noqa: F841  (the config entry)

    @ex.main
    def main(rows):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"no data in {rows} rows")

    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline(["with", "rows=4", "-F", str(tmp_path), "-d"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: no data in 4 rows" in err
    with pytest.raises(SystemExit) as exit_info:
        ex.run_commandline(["with", "colums=2", "-F", str(tmp_path)])
    assert exit_info.value.code == 2 and "unknown config key 'colums'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ex.run_commandline(["with", "colums=2", "-F", str(tmp_path), "-f"])
    record = json.loads((tmp_path / "2" / "config.json").read_text())
    assert record["colums"] == 2
    assert json.loads((tmp_path / "2" / "run.json").read_text())["meta"]["options"]["--force"] is True
