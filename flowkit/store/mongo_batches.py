"""Batch records and checkpoints in MongoDB (part of MongoStore).

``flowkit_batches`` holds one document per counted batch, unique per (task, node,
batch uid): the first insert wins, so every batch is counted once whoever records it
again (a run's last batches may instead come with its end, in its ``flowkit_runs``
document, and count with it: :mod:`.mongo_workers`); ``flowkit_checkpoints`` one
document per (task, node), the last checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .base import AttemptInputs, CountedBatch
from .mongo_keys import decode_keys, encode_keys
from .mongo_nodes import TaskNodes
from .mongo_part import insert_new

_NO_ID = {"_id": 0}


class BatchRecords(TaskNodes):
    """The batch and checkpoint methods of :class:`~flowkit.store.mongo.MongoStore` (an
    attempt's inputs include its node's state)."""

    _batches: Any
    _checkpoints: Any
    _runs: Any

    async def record_batch(
        self, task_id: str, node_id: str, batch_uid: str, metrics: dict[str, float]
    ) -> bool:
        """Count a batch once: True for the first record of ``batch_uid``, False after."""
        return (await self.record_batches([CountedBatch(task_id, node_id, batch_uid, metrics)]))[0]

    async def record_batches(self, batches: Sequence[CountedBatch]) -> list[bool]:
        """One unordered ``insert_many``; a duplicate key is a batch counted before."""
        for task_id in dict.fromkeys(b.task_id for b in batches):
            await self._require(task_id)
        await self.ensure_indexes()
        docs = [
            {
                "task_id": b.task_id,
                "node_id": b.node_id,
                "batch_uid": b.batch_uid,
                "metrics": encode_keys(b.metrics),
            }
            for b in batches
        ]
        recorded = await insert_new(self._batches, docs)
        for task_id in dict.fromkeys(b.task_id for b, new in zip(batches, recorded, strict=True) if new):
            self._bump(task_id)
        return recorded

    async def batch_records(self, task_id: str, node_id: str) -> dict[str, dict[str, float]]:
        """Those of ``flowkit_batches`` and those that came with a run's end, first first."""
        node = {"task_id": task_id, "node_id": node_id}
        with_end = self._runs.find({**node, "batches": {"$exists": True}}, {"batches": 1, "attempt": 1})
        docs, ends = await asyncio.gather(
            self._batches.find(node, _NO_ID).to_list(length=None), with_end.to_list(length=None)
        )
        if not docs and not ends:
            await self._require(task_id)
        records = {d["batch_uid"]: decode_keys(d.get("metrics", {})) for d in docs}
        for end in sorted(ends, key=lambda e: e.get("attempt", 0)):
            for batch in end["batches"]:
                records.setdefault(batch["batch_uid"], decode_keys(batch.get("metrics", {})))
        return records

    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None:
        await self._require(task_id)
        await self.ensure_indexes()
        await self._checkpoints.update_one(
            {"task_id": task_id, "node_id": node_id}, {"$set": {"data": encode_keys(data)}}, upsert=True
        )

    async def load_checkpoint(self, task_id: str, node_id: str) -> dict[str, Any] | None:
        doc = await self._checkpoints.find_one({"task_id": task_id, "node_id": node_id}, _NO_ID)
        if doc is None:
            await self._require(task_id)
            return None
        data: dict[str, Any] = decode_keys(doc["data"])
        return data

    async def attempt_inputs(self, task_id: str, node_id: str) -> AttemptInputs:
        """Three reads in one round trip's time."""
        state, checkpoint, counted = await asyncio.gather(
            self.node_state(task_id, node_id),
            self.load_checkpoint(task_id, node_id),
            self.batch_records(task_id, node_id),
        )
        return AttemptInputs(state, checkpoint, set(counted))
