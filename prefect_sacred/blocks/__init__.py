"""Prefect Blocks holding observer credentials and settings.

This module is the package's ``prefect.collections`` entry point: Prefect imports it before any
block lookup, so ``Block.load("<slug>/<name>")`` finds the classes defined here.
"""

from prefect_sacred.blocks.mongo import MongoDBObserverBlock

__all__: list[str] = ["MongoDBObserverBlock"]
