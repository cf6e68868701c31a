"""``prefect-sacred watch EXPERIMENT``: the watcher as a console command, beside a worker."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

__all__ = ["load_experiment", "watch_command"]


def load_experiment(target: str) -> Any:
    """The ``Experiment`` named by ``target``: ``path/exp.py``, ``pkg.module`` or ``pkg.module:ex``.

    A script is imported under a name of its own, not ``__main__``, so ``@ex.automain`` does not
    run it.

    Raises:
        ValueError: nothing importable there, or no single experiment in it.
    """
    from prefect_sacred.experiment import Experiment

    module_name, _, attribute = target.partition(":")
    if module_name.endswith(".py"):
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {module_name}")
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(f"_watched_{os.path.basename(path)[:-3]}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Experiment):
            raise ValueError(f"{target}: {attribute!r} is not an Experiment")
        return found
    experiments = {id(value): value for value in vars(module).values() if isinstance(value, Experiment)}
    if len(experiments) != 1:
        raise ValueError(f"{target}: {len(experiments)} experiments found; name one as {module_name}:NAME")
    return next(iter(experiments.values()))


def watch_command(target: str, dead_after: float | None = None) -> int:
    """Watch ``target``'s experiment until interrupted; returns the exit status.

    ``dead_after``: the least silence (seconds) that ends a run on another machine (default:
    ``PREFECT_SACRED_DEAD_AFTER`` or 300).
    """
    from prefect_sacred.watch.watcher import Watcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    try:
        experiment = load_experiment(target)
    except (ValueError, ImportError, OSError) as exc:
        print(f"prefect-sacred watch: error: {exc}", file=sys.stderr)
        return 2
    print(f"watching runs of flow {experiment.name!r}", flush=True)
    try:
        Watcher(experiment, dead_after=dead_after).run()
    except KeyboardInterrupt:
        pass
    return 0
