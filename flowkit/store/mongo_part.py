"""The base of MongoStore's parts: what each of them uses from the whole store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError

BULK_LIMIT = 50
"""Updates per bulk request: FerretDB 1.24 (SQLite) never answers an ``update`` command
of more than about 100 statements (measured: 80 answered in 0.13 s, 102 not in 20 s)."""


IDS_PER_READ = 500
"""``_id``s per ``{_id: {$in: [...]}}`` read (one index search each, on FerretDB too)."""

T = TypeVar("T")


def in_chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def bulk_update(collection: Any, requests: list[Any]) -> int:
    """Send unordered bulk writes of at most ``BULK_LIMIT`` requests; how many matched."""
    matched = 0
    for chunk in in_chunks(requests, BULK_LIMIT):
        result = await collection.bulk_write(list(chunk), ordered=False)
        matched += int(result.matched_count)
    return matched


async def find_by_ids(
    collection: Any, ids: Sequence[str], projection: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The documents of ``ids`` that exist, in reads of ``IDS_PER_READ`` at once."""
    reads = (
        collection.find({"_id": {"$in": list(chunk)}}, projection).to_list(length=None)
        for chunk in in_chunks(ids, IDS_PER_READ)
    )
    return [doc for docs in await asyncio.gather(*reads) for doc in docs]


_DUPLICATE_KEY = 11000


async def insert_new(collection: Any, docs: Sequence[dict[str, Any]]) -> list[bool]:
    """Insert ``docs`` in one unordered ``insert_many``; for each, True if it was inserted,
    False if a document with its unique key exists already. Other errors raise."""
    if not docs:
        return []  # insert_many refuses an empty list
    try:
        await collection.insert_many(list(docs), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != _DUPLICATE_KEY for error in errors):
            raise
        duplicates = {int(error["index"]) for error in errors}
        return [index not in duplicates for index in range(len(docs))]
    return [True] * len(docs)


class MongoStorePart:
    """Declares what :class:`~flowkit.store.mongo.MongoStore` (its existence checks and
    indexes) and :class:`~flowkit.store.changes.ChangeTracker` (its change counter)
    provide, so that each part stands, and type-checks, on its own. Last in the MRO."""

    async def _require(self, task_id: str) -> None:
        raise NotImplementedError

    async def ensure_indexes(self) -> None:
        raise NotImplementedError

    def _bump(self, task_id: str) -> None:
        raise NotImplementedError
