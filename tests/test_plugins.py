"""Observers of other packages: flags and URL schemes from the ``prefect_sacred.observers`` entry
points, as a real installed distribution would declare them (a ``.dist-info`` on the path)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from prefect_sacred.testing._suite import EXPERIMENTS
from tests.support import PYTHON, subprocess_env

pytestmark = pytest.mark.slow

PLUGIN = '''
"""A third-party observer: ``-X/--x_store WHERE`` and ``xstore://WHERE``."""

import json
import os

from prefect_sacred.observers.base import RunObserver
from prefect_sacred.observers.registry import register_observer_option, register_url_scheme


class XStoreObserver(RunObserver):
    def __init__(self, where, via):
        self.where, self.via = where, via

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self._id = "x-1" if _id is None else _id
        self._write(status="RUNNING", config=config)
        return self._id

    def completed_event(self, stop_time, result):
        self._write(status="COMPLETED", result=result)

    def _write(self, **fields):
        os.makedirs(self.where, exist_ok=True)
        with open(os.path.join(self.where, f"{self._id}.json"), "w") as handle:
            json.dump({"_id": self._id, "via": self.via, **fields}, handle, default=repr)


@register_observer_option("-X", "--x_store", "WHERE", "Store runs with the X observer.")
def _from_flag(value):
    return XStoreObserver(value, "flag")


@register_url_scheme("xstore")
def _from_url(url):
    return XStoreObserver(url[len("xstore://") :], "url")
'''

BROKEN = 'raise ImportError("broken_observer_plugin needs a driver that is not installed")\n'


def install(site: Path, name: str, source: str) -> None:
    """A distribution ``name`` 0.1 on ``site``: its module and its ``.dist-info``."""
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[prefect_sacred.observers]\n{name} = {name}\n")


def run_cli(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = subprocess_env(**env)
    environ["PYTHONPATH"] = os.pathsep.join([str(site), environ["PYTHONPATH"]])
    return subprocess.run(
        [PYTHON, str(EXPERIMENTS / "cli.py"), "with", "mode=complete", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=environ,
    )


def stored(where: Path) -> dict:
    """The one run the plugin's observer wrote into ``where``."""
    (path,) = where.glob("*.json")
    return dict(json.loads(path.read_text()))


def test_a_plugin_adds_a_command_line_flag_and_a_url_scheme(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "fake_observer_plugin", PLUGIN)

    done = run_cli(site, tmp_path, "-X", str(tmp_path / "by_flag"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert stored(tmp_path / "by_flag") == {
        "_id": "x-1",
        "via": "flag",
        "status": "COMPLETED",
        "result": "complete",
    }

    done = run_cli(site, tmp_path, PREFECT_SACRED_OBSERVERS=f"xstore://{tmp_path / 'by_url'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert stored(tmp_path / "by_url")["via"] == "url"
    assert stored(tmp_path / "by_url")["status"] == "COMPLETED"


def test_a_broken_plugin_is_logged_and_the_other_flags_still_work(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "broken_observer_plugin", BROKEN)
    install(site, "fake_observer_plugin", PLUGIN)

    done = run_cli(site, tmp_path, "-F", str(tmp_path / "runs"), "-X", str(tmp_path / "xruns"))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "observer plugin 'broken_observer_plugin' could not be loaded" in output
    assert "needs a driver that is not installed" in output
    run_dirs = [path for path in (tmp_path / "runs").iterdir() if path.name.isdigit()]
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0] / "run.json").read_text())["status"] == "COMPLETED"
    assert stored(tmp_path / "xruns")["status"] == "COMPLETED"


def test_a_plugin_cannot_take_a_flag_or_scheme_another_observer_has() -> None:
    from prefect_sacred.observers.registry import (
        ObserverConfigError,
        observer_options,
        register_observer_option,
        register_url_scheme,
    )

    def factory(value: str) -> Any:
        raise AssertionError("never built")

    before = {(option.short, option.long) for option in observer_options()}
    with pytest.raises(ObserverConfigError, match="-F/--files is taken by -F/--file_storage"):
        register_observer_option("-F", "--files", "DIR", "clashes with FileStorage's short flag")(factory)
    with pytest.raises(ObserverConfigError, match="file taken by another observer"):
        register_url_scheme("file")(factory)
    assert {(option.short, option.long) for option in observer_options()} == before
