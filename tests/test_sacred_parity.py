"""One Sacred script, run by Sacred 0.8.7 and by prefect_sacred with only its import changed.

The records are compared file by file; what differs is what the README documents: Prefect's
ids in ``meta.prefect``, the package recorded as a dependency, the log line format in cout.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, subprocess_env

pytestmark = pytest.mark.slow

SCRIPT = '''\
"""A configurable greeting with captured randomness."""
import json

from sacred import Experiment, Ingredient

voice = Ingredient("voice")


@voice.config
def voice_cfg():
    volume = 3  # how loud


ex = Experiment(ingredients=[voice])


@ex.config
def cfg():
    recipient = "world"  # who is greeted
    message = "Hello {}!".format(recipient)


@ex.named_config
def formal():
    recipient = "Madam"
    message = "Good day, {}.".format(recipient)


@ex.capture
def noise(_rnd, scale=1.0):
    return float(_rnd.normal()) * scale


@voice.capture
def shout(message, volume):
    return message.upper() + "!" * volume


@ex.automain
def main(message, voice, _run):
    print(message)
    _run.info["length"] = len(message)
    return {"noise": noise(), "shout": shout(message)}
'''


def run_script(directory: Path, importing: str, args: list[str]) -> dict[str, Any]:
    directory.mkdir()
    script = directory / "greeting.py"
    script.write_text(SCRIPT.replace("from sacred import", f"from {importing} import"))
    done = subprocess.run(
        [PYTHON, str(script), *args, "-F", "runs"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=directory,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = directory / "runs" / "1"
    return {
        "run": json.loads((run / "run.json").read_text()),
        "config": json.loads((run / "config.json").read_text()),
        "info": json.loads((run / "info.json").read_text()) if (run / "info.json").exists() else None,
        "cout": (run / "cout.txt").read_text(),
        "stdout": done.stdout,
    }


def test_a_sacred_script_records_what_sacred_records(tmp_path: Path) -> None:
    args = ["with", "formal", "recipient=you", "voice.volume=2", "seed=42"]
    theirs = run_script(tmp_path / "sacred", "sacred", args)
    ours = run_script(tmp_path / "ours", "prefect_sacred", args)
    assert ours["config"] == theirs["config"]
    assert ours["config"]["message"] == "Good day, you."
    assert ours["run"]["result"] == theirs["run"]["result"]  # the same _rnd numbers
    assert ours["info"] == theirs["info"] == {"length": 14}
    experiment, sacred_experiment = ours["run"]["experiment"], theirs["run"]["experiment"]
    assert experiment["name"] == sacred_experiment["name"] == "greeting"
    assert experiment["mainfile"] == sacred_experiment["mainfile"]
    assert [name.split("==")[0] for name in experiment["dependencies"]] == ["numpy", "prefect-sacred"]
    assert [name.split("==")[0] for name in sacred_experiment["dependencies"]] == ["numpy", "sacred"]
    meta, sacred_meta = ours["run"]["meta"], theirs["run"]["meta"]
    assert set(meta) - {"prefect"} == set(sacred_meta)
    for key in ("command", "config_updates", "named_configs"):
        assert meta[key] == sacred_meta[key], key
    for key, value in sacred_meta["options"].items():
        assert meta["options"][key] == value, key
    assert "Good day, you." in ours["cout"]
    assert "Running hook" not in ours["cout"] and "View at" not in ours["cout"]
