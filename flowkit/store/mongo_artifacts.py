"""Artifacts in MongoDB: each node's stream of batch outputs (part of MongoStore).

``flowkit_artifacts`` holds one document per (task, node, batch uid), unique, with a
``seq`` unique per node that never changes once given and has no gaps (readers use a
count as their cursor); ``flowkit_seq`` holds per node the last ``seq`` given, a hint
the unique index has the last word on.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from .base import Artifact
from .mongo_keys import decode_keys, encode_keys
from .mongo_part import MongoStorePart

_NO_ID = {"_id": 0}
HINT_EVERY = 16
"""Artifacts between writes of a stream's seq hint (a writer after this one, in another
process, meets at most this many taken seqs before it finds a free one)."""


def _artifact_from_doc(doc: dict[str, Any]) -> Artifact:
    # No projection on find_one_and_update: FerretDB 1.24 does not implement it there.
    doc = {k: v for k, v in doc.items() if k != "_id"}
    return Artifact.model_validate({**doc, "meta": decode_keys(doc.get("meta", {}))})


class ArtifactStreams(MongoStorePart):
    """The artifact methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _artifacts: Any
    _sequences: Any
    _last_seqs: dict[tuple[str, str], int]
    """(task, node) -> the highest seq this process stored (forgotten at completion and delete)."""

    async def put_artifact(
        self, task_id: str, node_id: str, batch_uid: str, meta: dict[str, Any]
    ) -> Artifact:
        """Write a partial artifact; a batch written again keeps its ``seq`` (meta replaced).

        One round trip as a rule: the next ``seq`` comes from the last this process gave
        the node, and the hint is written every ``HINT_EVERY`` artifacts and at the end.
        A writer starting from a hint behind the stream (another process wrote since)
        meets the taken seqs one by one: the unique index decides."""
        await self._require(task_id)
        await self.ensure_indexes()
        key = {"task_id": task_id, "node_id": node_id, "batch_uid": batch_uid}
        stored_meta = encode_keys(meta)
        stream = (task_id, node_id)
        last = self._last_seqs.get(stream)
        seq = (last if last is not None else await self._hinted_seq(task_id, node_id)) + 1
        collided = False
        while True:
            try:
                doc = {**key, "meta": stored_meta, "status": "partial", "seq": seq}
                await self._artifacts.insert_one(doc)
            except DuplicateKeyError:
                # Either this batch is already stored (keep its seq), or the seq was taken
                # (another writer, or a hint behind the stream).
                doc = await self._artifacts.find_one_and_update(
                    key, {"$set": {"meta": stored_meta}}, return_document=ReturnDocument.AFTER
                )
                if doc is not None:
                    self._bump(task_id)
                    return _artifact_from_doc(doc)
                seq, collided = seq + 1, True
                continue
            break
        self._last_seqs[stream] = max(seq, self._last_seqs.get(stream, 0))
        if collided or seq % HINT_EVERY == 0:
            await self._seq_taken(task_id, node_id, seq)
        self._bump(task_id)
        return Artifact(**key, meta=meta, seq=seq)

    async def _hinted_seq(self, task_id: str, node_id: str) -> int:
        doc = await self._sequences.find_one({"_id": json.dumps([task_id, node_id])})
        return int(doc["last"]) if doc else 0

    async def _seq_taken(self, task_id: str, node_id: str, seq: int) -> None:
        # $max never moves the hint back, so it stays <= the highest seq stored and the
        # unique index keeps the stream free of gaps.
        hint = {"_id": json.dumps([task_id, node_id])}
        try:
            await self._sequences.update_one(hint, {"$max": {"last": seq}}, upsert=True)
        except DuplicateKeyError:  # two first upserts raced: the document exists now
            await self._sequences.update_one(hint, {"$max": {"last": seq}})

    async def complete_artifacts(self, task_id: str, node_id: str) -> None:
        await self._require(task_id)
        last = self._last_seqs.pop((task_id, node_id), None)
        if last is not None:
            await self._seq_taken(task_id, node_id, last)
        await self._artifacts.update_many(
            {"task_id": task_id, "node_id": node_id}, {"$set": {"status": "complete"}}
        )
        self._bump(task_id)

    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]:
        """The node's artifacts with ``seq > after``, in ``seq`` order."""
        query = {"task_id": task_id, "node_id": node_id, "seq": {"$gt": after}}
        docs = await self._artifacts.find(query, _NO_ID).sort("seq", ASCENDING).to_list(length=None)
        if not docs:
            await self._require(task_id)
        return [_artifact_from_doc(d) for d in docs]
