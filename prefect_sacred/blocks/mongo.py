"""A Prefect Block holding a MongoDB connection, from which a MongoObserver is built.

A deployment selects it by name (``PREFECT_SACRED_OBSERVERS=block://sacred-mongodb/<name>``),
so observers change without code changes and the password stays in Prefect's secret store.
pymongo is imported only when an observer is built.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, HttpUrl, SecretStr

__all__ = ["MongoDBObserverBlock"]


class MongoDBObserverBlock(Block):
    """A MongoDB connection for Sacred-format experiment records (Omniboard, Incense).

    Args:
        url: The MongoDB URI, credentials included.
        db_name: The database holding the runs.
        collection_prefix: ``p`` stores runs in ``p_runs`` and metrics in ``p_metrics``.
        client_options: Extra ``pymongo.MongoClient`` arguments (TLS files, auth options).
        priority: The observer's priority; the highest gives the run its id.
        queued: Write from a background thread that rides out outages.

    Examples:
        Load a stored connection and record the runs of an experiment with it:
        ```python
        from prefect_sacred.blocks import MongoDBObserverBlock

        mongo = MongoDBObserverBlock.load("BLOCK_NAME")
        ex.observers.append(mongo.observer())
        ```
    """

    _block_type_name = "Sacred MongoDB"
    # Prefect's own key icon: this block is a credential (no official MongoDB logo is hosted).
    _logo_url = HttpUrl(
        "https://raw.githubusercontent.com/PrefectHQ/prefect/"
        "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/secret.png"
    )
    _documentation_url = HttpUrl("https://sacred.readthedocs.io/en/stable/observers.html#mongo-observer")

    url: SecretStr = Field(
        default=SecretStr("mongodb://localhost:27017"),
        description="The MongoDB connection URI, e.g. mongodb://user:password@host:27017/?authSource=admin.",
    )
    db_name: str = Field(default="sacred", description="The database holding the runs.")
    collection_prefix: str = Field(
        default="", description="A prefix for the runs and metrics collections (empty: runs, metrics)."
    )
    client_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="Extra keyword arguments for pymongo.MongoClient, such as TLS files.",
    )
    priority: int = Field(
        default=30, description="The observer's priority; the highest gives the run its id."
    )
    queued: bool = Field(
        default=False, description="Write from a background thread that retries while MongoDB is away."
    )

    def observer(self) -> Any:
        """A MongoObserver (a QueuedMongoObserver if ``queued``) writing with these settings."""
        from prefect_sacred.observers.mongo import MongoObserver, QueuedMongoObserver

        options = dict(self.client_options.get_secret_value())
        kwargs = dict(
            url=self.url.get_secret_value(),
            db_name=self.db_name,
            collection_prefix=self.collection_prefix,
            priority=self.priority,
            **options,
        )
        if self.queued:
            return QueuedMongoObserver(**kwargs)
        return MongoObserver(**kwargs)
