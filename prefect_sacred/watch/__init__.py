"""The watcher: runs created elsewhere recorded QUEUED, and runs whose process died ended.

:class:`Watcher` runs inside ``ex.serve`` or as ``prefect-sacred watch``. Queueing a run
yourself (``ex.queue``, ``-q``) is :mod:`prefect_sacred.flows.queued`. See the README's
"Queued runs and the watcher".
"""

from prefect_sacred.watch.watcher import Watcher

__all__ = ["Watcher"]
