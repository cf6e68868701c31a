"""What Sacred records about the code and the machine: experiment info and host info."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect_sacred.utils import md5_of_file, redact

__all__ = ["gather_experiment_info", "gather_host_info"]


def gather_experiment_info(
    name: str,
    base_dir: str,
    mainfile: str | None,
    ingredients: Sequence[Any] = (),
    save_git_info: bool = True,
) -> dict[str, Any]:
    """Sacred's ``ex_info``: name, base_dir, sources, dependencies, repositories, mainfile.

    ``ingredients`` (the experiment and its ingredients) give the modules whose imports are the
    dependencies, and the files and packages added with ``add_source_file`` and
    ``add_package_dependency``.
    """
    source_paths = set(_local_source_files(base_dir, mainfile))
    dependencies: dict[str, str | None] = {}
    for ingredient in ingredients:
        source_paths |= set(getattr(ingredient, "extra_sources", ()))
        for top in _imported_tops(ingredient.imported_modules(), base_dir):
            dependencies.update(_distributions_of(top))
    if importlib.util.find_spec("numpy") is not None:  # Sacred always records it: it seeds it
        dependencies.update(_distributions_of("numpy"))
    for ingredient in ingredients:
        for package, version in getattr(ingredient, "extra_dependencies", {}).items():
            dependencies[package] = version or _version(package)
    sources = [(os.path.relpath(path, base_dir), md5_of_file(path)) for path in sorted(source_paths)]
    keep_git = all(getattr(ingredient, "save_git_info", True) for ingredient in ingredients) and save_git_info
    return {
        "name": name,
        "base_dir": base_dir,
        "sources": sources,
        "dependencies": sorted(
            (f"{package}=={version or '<unknown>'}" for package, version in dependencies.items()),
            key=str.lower,
        ),
        "repositories": _repositories(sorted(source_paths)) if keep_git else [],
        "mainfile": os.path.relpath(mainfile, base_dir) if mainfile else None,
    }


def _imported_tops(module_names: set[str], base_dir: str) -> set[str]:
    """Top-level packages of the modules a module imports from (Sacred's rule).

    Modules under ``base_dir`` are sources, not dependencies; the standard library and private
    names are skipped.
    """
    tops: set[str] = set()
    base = os.path.abspath(base_dir)
    for module_name in module_names:
        top = module_name.partition(".")[0]
        if top.startswith("_") or top in sys.builtin_module_names or top in sys.stdlib_module_names:
            continue
        module = sys.modules.get(top)
        filename = getattr(module, "__file__", None)
        if filename and os.path.abspath(filename).startswith(base + os.sep) and not _installed(filename):
            continue
        tops.add(top)
    return tops


def _installed(filename: str) -> bool:
    return any(part in {"site-packages", "dist-packages"} for part in Path(filename).parts)


def _distributions_of(top: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for distribution in _providers().get(top, ()):
        version = _version(distribution)
        if version is not None:
            found[distribution] = version
    return found


@functools.cache
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _local_source_files(base_dir: str, mainfile: str | None) -> list[str]:
    """The main file plus every imported module that lives under ``base_dir``."""
    base = Path(base_dir).resolve()
    found: set[Path] = set()
    if mainfile and os.path.isfile(mainfile):
        found.add(Path(mainfile).resolve())
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename or not filename.endswith((".py", ".pyx")):
            continue
        path = Path(filename).resolve()
        if not path.is_relative_to(base):
            continue
        parts = path.relative_to(base).parts
        # Installed packages inside the project (a .venv next to the script) are dependencies.
        if any(part in {"site-packages", "dist-packages"} or part.startswith(".") for part in parts):
            continue
        found.add(path)
    return sorted(str(path) for path in found if path.is_file())


# Installed distributions do not change while a process runs; scanning them costs ~0.3 s.
_providers = functools.cache(importlib.metadata.packages_distributions)


def _git(cwd: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _repositories(source_paths: list[str]) -> list[dict[str, Any]]:
    repositories: dict[str, dict[str, Any]] = {}
    for directory in sorted({os.path.dirname(path) for path in source_paths}):
        top = _git(directory, "rev-parse", "--show-toplevel")
        if not top or top in repositories:
            continue
        commit = _git(top, "rev-parse", "HEAD")
        if commit is None:  # a repository without commits
            continue
        url = _git(top, "remote", "get-url", "origin") or top
        status = _git(top, "status", "--porcelain", "--untracked-files=no")
        repositories[top] = {"url": redact(url), "commit": commit, "dirty": bool(status)}
    return list(repositories.values())


@functools.cache
def _static_host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": [platform.system(), platform.platform()],
        "python_version": platform.python_version(),
        "cpu": _cpu_name(),
    }
    gpus = _gpus()
    if gpus is not None:
        info["gpus"] = gpus
    return info


def gather_host_info(captured_env: tuple[str, ...] = ()) -> dict[str, Any]:
    """Sacred's ``host_info``, with ``ENV`` holding the chosen environment variables."""
    info = dict(_static_host_info())
    info["ENV"] = {name: os.environ[name] for name in captured_env if name in os.environ}
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> dict[str, Any] | None:
    try:
        done = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,persistence_mode,driver_version",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    gpus, driver = [], None
    for line in done.stdout.strip().splitlines():
        model, memory, persistence, driver = (field.strip() for field in line.split(","))
        gpus.append(
            {"model": model, "total_memory": int(float(memory)), "persistence_mode": persistence == "Enabled"}
        )
    return {"gpus": gpus, "driver_version": driver}
