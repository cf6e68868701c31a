"""QueuedMongoObserver: a MongoObserver behind the generic queue, so runs go on during outages.

The queue (:class:`~prefect_sacred.observers.queue.QueueObserver`) retries every event while
MongoDB is away. The wrapped observer therefore tries its final write once
(``final_save_timeout=0``) and raises instead of saving the run to a file
(``save_on_final_failure=False``): the queue retries it, and when the queue gives up it hands
the undelivered events to :meth:`MongoObserver.save_undelivered`, which saves the run whole,
with its final status, to one file.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from prefect_sacred.observers.mongo.observer import DEFAULT_MONGO_PRIORITY, MongoObserver
from prefect_sacred.observers.queue import QueueObserver

__all__ = ["QueuedMongoObserver"]


class QueuedMongoObserver(QueueObserver):
    """A MongoObserver written to from a background thread: the run goes on during outages.

    Events are retried every ``retry_interval`` seconds while MongoDB is away; at the end of the
    run the queue is given ``join_timeout`` seconds, then the run is saved to a file in
    ``failure_dir`` and the message says where. Unlike Sacred's, its priority is the
    MongoObserver's (30), so it still gives the run its numeric id.

    Args:
        interval: Seconds the idle background thread sleeps between checks of its queue.
        retry_interval: Seconds between attempts while MongoDB is away.
        url: As for :class:`MongoObserver`; likewise ``db_name``, ``collection``,
            ``overwrite``, ``priority``, ``client``, ``collection_prefix``, ``failure_dir``.
        db_name: The database holding the collections.
        collection: Sacred's deprecated name of the runs collection.
        overwrite: The ``_id`` of an existing run to record this run into.
        priority: Observers are called in descending priority.
        client: A ready ``pymongo.MongoClient``.
        join_timeout: The most seconds the end of the run waits for the queue.
        failure_dir: Where undelivered runs are saved.
        collection_prefix: ``p`` stores runs in ``p_runs`` and metrics in ``p_metrics``.
        **kwargs: Passed to :class:`MongoObserver` and on to ``pymongo.MongoClient``.
    """

    def __init__(
        self,
        interval: float = 20.0,
        retry_interval: float = 10.0,
        url: str | None = None,
        db_name: str = "sacred",
        collection: str = "runs",
        overwrite: int | str | None = None,
        priority: int = DEFAULT_MONGO_PRIORITY,
        client: Any = None,
        *,
        join_timeout: float = 30.0,
        failure_dir: str | os.PathLike[str] | None = None,
        collection_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        covered = MongoObserver(
            url=url,
            db_name=db_name,
            collection=collection,
            collection_prefix=collection_prefix,
            overwrite=overwrite,
            priority=priority,
            client=client,
            failure_dir=failure_dir,
            final_save_timeout=0.0,
            save_on_final_failure=False,
            **kwargs,
        )
        super().__init__(
            covered,
            interval=interval,
            retry_interval=retry_interval,
            join_timeout=join_timeout,
            failure_dir=failure_dir,
        )

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> QueuedMongoObserver:
        """Sacred's deprecated alias of the constructor (warns as Sacred's does)."""
        warnings.warn(
            "QueuedMongoObserver.create(...) is deprecated. Please use QueuedMongoObserver(...) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(*args, **kwargs)
