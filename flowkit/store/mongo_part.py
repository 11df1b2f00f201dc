"""The base of MongoStore's parts: what each of them uses from the whole store."""

from __future__ import annotations

from typing import Any

BULK_LIMIT = 50
"""Updates per bulk request: FerretDB 1.24 (SQLite) never answers an ``update`` command
of more than about 100 statements (measured: 80 answered in 0.13 s, 102 not in 20 s)."""


async def bulk_update(collection: Any, requests: list[Any]) -> int:
    """Send unordered bulk writes of at most ``BULK_LIMIT`` requests; how many matched."""
    matched = 0
    for start in range(0, len(requests), BULK_LIMIT):
        result = await collection.bulk_write(requests[start : start + BULK_LIMIT], ordered=False)
        matched += int(result.matched_count)
    return matched


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
