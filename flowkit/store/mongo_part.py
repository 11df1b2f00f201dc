"""The base of MongoStore's parts: what each of them uses from the whole store."""

from __future__ import annotations


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
