"""Artifacts in MongoDB: each node's stream of batch outputs (part of MongoStore).

``flowkit_artifacts`` holds one document per (task, node, batch uid), unique, with a
``seq`` unique per node that never changes once given and has no gaps (readers use a
count as their cursor); ``flowkit_seq`` holds per node the last ``seq`` given, a hint
the unique index has the last word on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from .base import Artifact
from .mongo_keys import decode_keys, encode_keys
from .mongo_part import MongoStorePart, insert_new

_NO_ID = {"_id": 0}
HINT_EVERY = 16
"""Artifacts between writes of a stream's seq hint (a writer after this one, in another
process, meets at most this many taken seqs before it finds a free one)."""


def _artifact_from_doc(doc: dict[str, Any]) -> Artifact:
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
                rewritten = await self._rewrite(key, stored_meta)
                if rewritten is not None:
                    self._bump(task_id)
                    return rewritten
                seq, collided = seq + 1, True
                continue
            break
        self._last_seqs[stream] = max(seq, self._last_seqs.get(stream, 0))
        if collided or seq % HINT_EVERY == 0:
            await self._seq_taken(task_id, node_id, seq)
        self._bump(task_id)
        return Artifact(**key, meta=meta, seq=seq)

    async def put_artifacts(
        self, task_id: str, node_id: str, items: Sequence[tuple[str, dict[str, Any]]], *, new: bool
    ) -> None:
        """New uids go in one unordered ``insert_many`` at the next seqs; those whose seq was
        taken meanwhile (another writer) are written again one by one, so the stream keeps
        no gaps. Uids that may be stored already, one by one (each keeps its seq)."""
        if not new or len(items) <= 1:
            for batch_uid, meta in items:
                await self.put_artifact(task_id, node_id, batch_uid, meta)
            return
        await self._require(task_id)
        await self.ensure_indexes()
        stream = (task_id, node_id)
        last = self._last_seqs.get(stream)
        first = (last if last is not None else await self._hinted_seq(task_id, node_id)) + 1
        docs = [
            {
                "task_id": task_id,
                "node_id": node_id,
                "batch_uid": uid,
                "meta": encode_keys(meta),
                "status": "partial",
                "seq": first + i,
            }
            for i, (uid, meta) in enumerate(items)
        ]
        stored = await insert_new(self._artifacts, docs)
        taken = [seq for seq, ok in zip(range(first, first + len(docs)), stored, strict=True) if ok]
        if taken:
            self._last_seqs[stream] = max(max(taken), self._last_seqs.get(stream, 0))
            if any(seq % HINT_EVERY == 0 for seq in taken):
                await self._seq_taken(task_id, node_id, max(taken))
            self._bump(task_id)
        for (uid, meta), ok in zip(items, stored, strict=True):
            if not ok:
                await self.put_artifact(task_id, node_id, uid, meta)

    async def _rewrite(self, key: dict[str, str], meta: dict[str, Any]) -> Artifact | None:
        """A stored batch's new meta, in its place (None: the batch is not stored).

        A read, then a replacement of what was read: FerretDB 1.24's ``$set`` takes a meta
        whose values equal the old one's for no change even when its keys differ
        (``{"i": 1}`` -> ``{"again": 1}``). The replacement is conditional on the status
        read, so a completion in between is not undone (then it is read again)."""
        while True:
            doc = await self._artifacts.find_one(key)
            if doc is None:
                return None
            stored = {k: v for k, v in doc.items() if k != "_id"} | {"meta": meta}
            if (
                await self._artifacts.replace_one({"_id": doc["_id"], "status": doc["status"]}, stored)
            ).matched_count:
                return _artifact_from_doc(stored)

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
