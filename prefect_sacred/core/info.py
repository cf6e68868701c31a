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

from prefect_sacred.settings import SETTINGS
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
    dependencies, the files and packages added with ``add_source_file`` and
    ``add_package_dependency``, and, as in Sacred, each one's own file and the modules loaded
    from its directory (an ingredient defined outside the experiment's directory included).
    ``SETTINGS.DISCOVER_SOURCES`` and ``SETTINGS.DISCOVER_DEPENDENCIES`` choose how, as in Sacred.
    """
    source_paths = _source_files(base_dir, mainfile, ingredients)
    dependencies = _dependencies(base_dir, ingredients)
    if importlib.util.find_spec("numpy") is not None:  # Sacred always records it: it seeds it
        dependencies.update(_distributions_of("numpy"))
    for ingredient in ingredients:
        source_paths |= set(getattr(ingredient, "extra_sources", ()))
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


def _source_files(base_dir: str, mainfile: str | None, ingredients: Sequence[Any]) -> set[str]:
    """The sources ``SETTINGS.DISCOVER_SOURCES`` asks for, of the experiment and each ingredient."""
    strategy = SETTINGS.DISCOVER_SOURCES
    places = {(base_dir, mainfile)}
    for ingredient in ingredients:
        if getattr(ingredient, "mainfile", None):
            places.add((ingredient.base_dir, ingredient.mainfile))
    found: set[str] = {path for _, path in places if path and os.path.isfile(path)}
    if strategy == "none":
        return found
    if strategy == "dir":
        for directory, _ in places:
            found |= set(_python_files_under(directory))
        return found
    # "imported" and "sys": the modules loaded from under each place's directory.
    loaded = _loaded_module_files()
    for directory, _ in places:
        found |= set(_local_source_files(directory, loaded))
    return found


def _dependencies(base_dir: str, ingredients: Sequence[Any]) -> dict[str, str | None]:
    """The packages ``SETTINGS.DISCOVER_DEPENDENCIES`` asks for, by distribution, with versions."""
    strategy = SETTINGS.DISCOVER_DEPENDENCIES
    dependencies: dict[str, str | None] = {}
    if strategy == "pkg":  # every installed distribution
        for distribution in importlib.metadata.distributions():
            project = distribution.metadata["Name"]
            if project:
                dependencies[project] = distribution.version
        return dependencies
    if strategy == "none":
        return dependencies
    if strategy == "sys":
        modules = {name for name in list(sys.modules) if not name.startswith("_")}
    else:
        modules = set().union(*(ingredient.imported_modules() for ingredient in ingredients))
    for top in _imported_tops(modules, base_dir):
        dependencies.update(_distributions_of(top))
    return dependencies


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


def _loaded_module_files() -> list[Path]:
    """The file of every loaded Python module, resolved."""
    paths = []
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if filename and filename.endswith((".py", ".pyx")):
            paths.append(Path(filename).resolve())
    return paths


def _local_source_files(base_dir: str, loaded: list[Path]) -> list[str]:
    """The loaded modules that live under ``base_dir`` (installed packages inside it excepted)."""
    base = Path(base_dir).resolve()
    found: set[Path] = set()
    for path in loaded:
        if not path.is_relative_to(base):
            continue
        parts = path.relative_to(base).parts
        # Installed packages inside the project (a .venv next to the script) are dependencies.
        if any(part in {"site-packages", "dist-packages"} or part.startswith(".") for part in parts):
            continue
        found.add(path)
    return sorted(str(path) for path in found if path.is_file())


_NOT_SOURCES = {"site-packages", "dist-packages", "__pycache__", "node_modules"}


def _python_files_under(directory: str) -> list[str]:
    """Every ``.py`` file below ``directory`` (Sacred's ``dir`` discovery), hidden folders skipped."""
    found = []
    for root, folders, files in os.walk(directory):
        folders[:] = [
            f for f in folders if not f.startswith(".") and f not in {"site-packages", "__pycache__"}
        ]
        found += [os.path.join(root, name) for name in files if name.endswith(".py")]
    return sorted(str(Path(path).resolve()) for path in found)


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


def gather_host_info(captured_env: tuple[str, ...] = ()) -> dict[str, Any]:
    """Sacred's ``host_info``, with ``ENV`` holding the chosen environment variables.

    ``SETTINGS.HOST_INFO`` decides, as in Sacred, whether the CPU and GPUs are recorded and
    which environment variables every run records besides ``captured_env``.
    """
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": [platform.system(), platform.platform()],
        "python_version": platform.python_version(),
    }
    if SETTINGS.HOST_INFO.INCLUDE_CPU_INFO:
        info["cpu"] = _cpu_name()
    if SETTINGS.HOST_INFO.INCLUDE_GPU_INFO and (gpus := _gpus()) is not None:
        info["gpus"] = gpus
    names = dict.fromkeys([*SETTINGS.HOST_INFO.CAPTURED_ENV, *captured_env])
    info["ENV"] = {name: os.environ[name] for name in names if name in os.environ}
    return info


@functools.cache  # the machine does not change while a process runs
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
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
