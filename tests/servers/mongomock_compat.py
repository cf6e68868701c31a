"""mongomock for every pymongo the ``mongo`` extra admits: the ``sort`` of pymongo 4.11+.

Since pymongo 4.11 an update or replace of one document may carry a ``sort``: which document
to change when several match. pymongo's ``UpdateOne``/``ReplaceOne`` pass ``sort=`` (``None``
when not given) to the bulk builder of the collection, which mongomock 4.3 rejects, so every
``bulk_write`` with them fails on an in-process mongomock collection. :func:`patch_mongomock`
(called when ``tests.servers.mongo_wire`` is imported) makes mongomock take it and honour it;
the wire server honours the ``sort`` of an update command with :func:`first_in_order`.
"""

from __future__ import annotations

import inspect
from typing import Any

import mongomock
import mongomock.collection

__all__ = ["first_in_order", "patch_mongomock"]


def first_in_order(collection: Any, query: dict[str, Any], sort: Any) -> dict[str, Any]:
    """``query`` narrowed to the first document it matches in ``sort`` order (as is, if none)."""
    order = list(sort.items()) if isinstance(sort, dict) else list(sort)
    first = collection.find_one(query, {"_id": 1}, sort=order)
    if first is None:  # nothing matches: an upsert builds its document from the query as it is
        return query
    if "_id" in query:
        return {"$and": [query, {"_id": first["_id"]}]}
    return {**query, "_id": first["_id"]}


def patch_mongomock() -> None:
    """Let in-process mongomock take the ``sort=`` of pymongo 4.11+ and honour it.

    pymongo's ``UpdateOne``/``ReplaceOne`` pass ``sort=`` (``None`` when not given) to the
    bulk builder of the collection, which mongomock 4.3 rejects, so every such ``bulk_write``
    fails in process; ``update_one``/``replace_one`` gain the same keyword. The document is
    chosen when the operation runs, after the operations before it in the bulk. Idempotent; a
    mongomock that takes ``sort`` itself is left alone.
    """
    builder = mongomock.collection.BulkOperationBuilder
    if "sort" not in inspect.signature(builder.add_update).parameters:
        add_update, add_replace = builder.add_update, builder.add_replace

        def sorted_update(
            self: Any,
            selector: Any,
            doc: Any,
            multi: bool = False,
            upsert: bool = False,
            sort: Any = None,
            **kwargs: Any,
        ) -> None:
            if not sort or multi:
                return add_update(self, selector, doc, multi, upsert, **kwargs)
            return _add_in_order(self, selector, sort, add_update, doc, multi, upsert, **kwargs)

        def sorted_replace(
            self: Any, selector: Any, doc: Any, upsert: bool, sort: Any = None, **kwargs: Any
        ) -> None:
            if not sort:
                return add_replace(self, selector, doc, upsert, **kwargs)
            return _add_in_order(self, selector, sort, add_replace, doc, upsert, **kwargs)

        setattr(builder, "add_update", sorted_update)  # noqa: B010  (a method, patched)
        setattr(builder, "add_replace", sorted_replace)  # noqa: B010
    collection = mongomock.collection.Collection
    for name in ("update_one", "replace_one"):
        method = getattr(collection, name)
        if "sort" not in inspect.signature(method).parameters:
            setattr(collection, name, _with_sort(method))


def _add_in_order(builder: Any, selector: Any, sort: Any, add: Any, *args: Any, **kwargs: Any) -> None:
    """Queue ``add(builder, selector, *args)`` for the document ``selector`` matches first in order."""

    def exec_update() -> Any:  # mongomock's builder counts results by this name
        scratch = mongomock.collection.BulkOperationBuilder(builder.collection, ordered=builder.ordered)
        add(scratch, first_in_order(builder.collection, selector, sort), *args, **kwargs)
        return scratch.executors[0]()

    builder.executors.append(exec_update)


def _with_sort(method: Any) -> Any:
    def with_sort(self: Any, filter: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        if sort:
            filter = first_in_order(self, filter, sort)
        return method(self, filter, *args, **kwargs)

    with_sort.__name__ = method.__name__
    return with_sort
