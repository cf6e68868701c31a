"""The MongoDB wing: Sacred's MongoDB format, readable by Omniboard and Incense, safe under load.

* :class:`MongoObserver` records runs (``observer``; how it writes: ``writing``, ``connect``,
  ``files``, ``output``, ``storage``, ``failures``);
* :class:`QueuedMongoObserver` writes from a background thread that rides out outages
  (``queued``);
* :func:`read_captured_out` and :func:`read_metric` read back what GridFS and metric chunks
  hold beyond Sacred's format;
* ``-m/--mongo_db`` and the ``mongodb://``/``mongodb+srv://`` observer URLs are registered when
  this package is imported (``options``).

Importing the wing registers the flag and schemes only: the observers are imported on first use
(PEP 562), and pymongo when an observer is built.
"""

import typing as _typing

from prefect_sacred._lazy import lazy_attributes as _lazy_attributes
from prefect_sacred.observers.mongo.options import parse_mongo_db_arg

if _typing.TYPE_CHECKING:
    from prefect_sacred.observers.mongo.failures import DEFAULT_FAILURE_DIR, MongoWriteError
    from prefect_sacred.observers.mongo.observer import MongoObserver
    from prefect_sacred.observers.mongo.output import read_captured_out
    from prefect_sacred.observers.mongo.queued import QueuedMongoObserver
    from prefect_sacred.observers.mongo.storage import read_metric

__all__ = [
    "DEFAULT_FAILURE_DIR",
    "MongoObserver",
    "MongoWriteError",
    "QueuedMongoObserver",
    "parse_mongo_db_arg",
    "read_captured_out",
    "read_metric",
]

_HERE = "prefect_sacred.observers.mongo"
__getattr__, __dir__ = _lazy_attributes(
    __name__,
    {
        "DEFAULT_FAILURE_DIR": f"{_HERE}.failures",
        "MongoWriteError": f"{_HERE}.failures",
        "MongoObserver": f"{_HERE}.observer",
        "QueuedMongoObserver": f"{_HERE}.queued",
        "read_captured_out": f"{_HERE}.output",
        "read_metric": f"{_HERE}.storage",
    },
)
