"""Prefect Blocks holding observer credentials and settings.

This module is the package's ``prefect.collections`` entry point: Prefect imports it before any
block lookup, so ``Block.load("<slug>/<name>")`` finds the classes defined here.
"""

from prefect_sacred.blocks.mongo import MongoDBObserverBlock
from prefect_sacred.blocks.object_store import GcsObserverBlock, S3ObserverBlock
from prefect_sacred.blocks.slack import SlackObserverBlock
from prefect_sacred.blocks.telegram import TelegramObserverBlock

__all__ = [
    "GcsObserverBlock",
    "MongoDBObserverBlock",
    "S3ObserverBlock",
    "SlackObserverBlock",
    "TelegramObserverBlock",
]
