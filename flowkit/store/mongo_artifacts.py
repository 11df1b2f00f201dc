"""Artifacts in MongoDB: each node's stream of batch outputs (part of MongoStore).

``flowkit_artifacts`` holds one document per (task, node, batch uid), unique, with a
``seq`` unique per node that never changes once given and has no gaps; its ``_id`` is
``[task, node, seq]``, so a streaming reader asks for the next seqs by key.
``flowkit_seq`` holds per node the last ``seq`` given, a hint the unique index has the
last word on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from .base import Artifact
from .mongo_keys import decode_keys, encode_keys
from .mongo_part import MongoStorePart, find_by_ids, insert_new

_NO_ID = {"_id": 0}
HINT_EVERY = 16
"""Artifacts between writes of a stream's seq hint (a writer after this one, in another
process, meets at most this many taken seqs before it finds a free one)."""


def _artifact_id(task_id: str, node_id: str, seq: int) -> str:
    """An artifact's ``_id`` is its place in the stream: a reader asks for the next places
    by ``_id`` (an index search on FerretDB, where other filters scan the collection)."""
    return json.dumps([task_id, node_id, seq])


def _new_doc(task_id: str, node_id: str, batch_uid: str, meta: dict[str, Any], seq: int) -> dict[str, Any]:
    """A partial artifact at ``seq`` (``meta`` already encoded)."""
    return {
        "_id": _artifact_id(task_id, node_id, seq),
        "task_id": task_id,
        "node_id": node_id,
        "batch_uid": batch_uid,
        "meta": meta,
        "status": "partial",
        "seq": seq,
    }


def _artifact_from_doc(doc: dict[str, Any], complete: bool = False) -> Artifact:
    """``complete``: the stream is (its hint says so; older versions marked each artifact)."""
    doc = {k: v for k, v in doc.items() if k != "_id"}
    if complete:
        doc["status"] = "complete"
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
        seq = await self._next_seq(task_id, node_id)
        collided = False
        while True:
            try:
                await self._artifacts.insert_one(_new_doc(task_id, node_id, batch_uid, stored_meta, seq))
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
        await self._stored_up_to(task_id, node_id, seq, hint=collided or seq % HINT_EVERY == 0)
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
        first = await self._next_seq(task_id, node_id)
        docs = [
            _new_doc(task_id, node_id, uid, encode_keys(meta), first + i)
            for i, (uid, meta) in enumerate(items)
        ]
        stored = await insert_new(self._artifacts, docs)
        taken = [seq for seq, ok in zip(range(first, first + len(docs)), stored, strict=True) if ok]
        if taken:
            hint = any(seq % HINT_EVERY == 0 for seq in taken)
            await self._stored_up_to(task_id, node_id, max(taken), hint=hint)
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

    async def _next_seq(self, task_id: str, node_id: str) -> int:
        """After the last seq this process gave the node, else after the stored hint."""
        last = self._last_seqs.get((task_id, node_id))
        return (last if last is not None else await self._hinted_seq(task_id, node_id)) + 1

    async def _stored_up_to(self, task_id: str, node_id: str, seq: int, *, hint: bool) -> None:
        """``seq`` is stored: remembered as this process's last, and written to the hint."""
        stream = (task_id, node_id)
        self._last_seqs[stream] = max(seq, self._last_seqs.get(stream, 0))
        if hint:
            await self._seq_taken(task_id, node_id, seq)
        self._bump(task_id)

    async def _hinted_seq(self, task_id: str, node_id: str) -> int:
        doc = await self._sequences.find_one({"_id": json.dumps([task_id, node_id])})
        return int(doc["last"]) if doc else 0

    async def _seq_taken(self, task_id: str, node_id: str, seq: int, *, complete: bool = False) -> None:
        # $max never moves the hint back, so it stays <= the highest seq stored and the
        # unique index keeps the stream free of gaps.
        hint = {"_id": json.dumps([task_id, node_id])}
        update: dict[str, Any] = {"$max": {"last": seq}} | ({"$set": {"complete": True}} if complete else {})
        try:
            await self._sequences.update_one(hint, update, upsert=True)
        except DuplicateKeyError:  # two first upserts raced: the document exists now
            await self._sequences.update_one(hint, update)

    async def complete_artifacts(self, task_id: str, node_id: str) -> None:
        """One write, on the stream's hint: every artifact of a completed stream reads as
        complete (rewriting each one cost FerretDB 1.2 s per 10,000)."""
        await self._require(task_id)
        last = self._last_seqs.pop((task_id, node_id), None)
        await self._seq_taken(task_id, node_id, last or 0, complete=True)
        self._bump(task_id)

    async def _completed(self, task_id: str, node_id: str) -> bool:
        doc = await self._sequences.find_one({"_id": json.dumps([task_id, node_id])})
        return bool(doc and doc.get("complete"))

    async def next_artifacts(self, task_id: str, node_id: str, after: int, limit: int) -> list[Artifact]:
        """Up to ``limit`` of the node's artifacts from ``seq`` ``after + 1`` on, with no seq
        missing in between, read by ``_id``. A stream being written may show a later seq
        before an earlier one lands: it comes with the next read."""
        ids = [_artifact_id(task_id, node_id, seq) for seq in range(after + 1, after + 1 + limit)]
        docs, complete = await asyncio.gather(
            find_by_ids(self._artifacts, ids), self._completed(task_id, node_id)
        )
        by_seq = {doc["seq"]: doc for doc in docs}
        if not by_seq:
            await self._require(task_id)
        run: list[dict[str, Any]] = []
        while after + 1 + len(run) in by_seq:
            run.append(by_seq[after + 1 + len(run)])
        return [_artifact_from_doc(doc, complete) for doc in run]

    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]:
        """The node's artifacts with ``seq > after``, in ``seq`` order."""
        query = {"task_id": task_id, "node_id": node_id, "seq": {"$gt": after}}
        docs, complete = await asyncio.gather(
            self._artifacts.find(query, _NO_ID).sort("seq", ASCENDING).to_list(length=None),
            self._completed(task_id, node_id),
        )
        if not docs:
            await self._require(task_id)
        return [_artifact_from_doc(d, complete) for d in docs]
