"""Sacred's ``sacred.stflow``: :class:`LogFileWriter`, recording TensorFlow's summary log dirs.

Inside ``with LogFileWriter(ex):`` (or a function decorated with ``@LogFileWriter(ex)``) every
summary writer TensorFlow creates (``tf.summary.create_file_writer``, and TF1's
``tf.compat.v1.summary.FileWriter``) adds its log directory to the current run's
``info["tensorflow"]["logdirs"]``, as in Sacred. Without TensorFlow imported it records nothing.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

from prefect_sacred.core.run import current_run

__all__ = ["LogFileWriter"]


class LogFileWriter(contextlib.ContextDecorator):
    """Record the log dirs of TensorFlow's summary writers made while it is active.

    Args:
        experiment: The experiment (Sacred's signature; the run is the current one).
    """

    def __init__(self, experiment: Any = None) -> None:
        self.experiment = experiment
        self._patches: contextlib.ExitStack | None = None

    def __enter__(self) -> LogFileWriter:
        self._patches = contextlib.ExitStack()
        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None:
            summary = getattr(tensorflow, "summary", None)
            if summary is not None and hasattr(summary, "create_file_writer"):
                self._patches.enter_context(_recording(summary, "create_file_writer"))
            v1_summary = getattr(getattr(getattr(tensorflow, "compat", None), "v1", None), "summary", None)
            if v1_summary is not None and hasattr(v1_summary, "FileWriter"):
                self._patches.enter_context(_recording(v1_summary, "FileWriter"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._patches is not None:
            self._patches.close()
            self._patches = None


@contextlib.contextmanager
def _recording(owner: Any, name: str) -> Iterator[None]:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def making_a_writer(logdir: Any, *args: Any, **kwargs: Any) -> Any:
        writer = original(logdir, *args, **kwargs)
        try:
            info = current_run().info.setdefault("tensorflow", {})
        except RuntimeError:  # outside a run: nothing to record in
            return writer
        logdirs = info.setdefault("logdirs", [])
        if str(logdir) not in logdirs:
            logdirs.append(str(logdir))
        return writer

    setattr(owner, name, making_a_writer)
    try:
        yield
    finally:
        setattr(owner, name, original)
