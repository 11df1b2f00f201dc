"""Runs and worker states in MongoDB: the records workers write (part of MongoStore).

- runs (``flowkit_runs``): one document per attempt, ``_id`` =
  ``json.dumps([task_id, node_id, attempt])``. The first claim inserts it, so of two
  workers handed the same attempt only one holds it; the outcome is a conditional
  update on (worker, ``running``), so a worker that lost the attempt cannot end it,
  and it may carry the run's last batch records (``batches``: counted with it);
- worker states (``worker_states``): one document per worker, ``_id`` = worker id,
  upserted with a ``$set`` of dotted paths (``active_run.checkpoint``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import DuplicateKeyError, WriteError

from ..states import NodeError
from .base import BARRED, RunClaim, RunEnd, RunRecord, RunState, barred_run
from .fields import worker_state_paths
from .mongo_keys import decode_keys, encode_keys, encode_path
from .mongo_part import MongoStorePart, bulk_update, insert_new

_NO_ID = {"_id": 0}
_PATH_NOT_VIABLE = 28  # MongoDB's code for a $set path through a value that is not a document


def _run_id(task_id: str, node_id: str, attempt: int) -> str:
    return json.dumps([task_id, node_id, attempt])


def _held_by(worker_id: str) -> dict[str, str]:
    """The filter of a run ``worker_id`` still runs."""
    return {"worker_id": worker_id, "state": "running"}


def _claimed(claim: RunClaim) -> dict[str, Any]:
    run = RunRecord(
        task_id=claim.task_id,
        node_id=claim.node_id,
        attempt=claim.attempt,
        worker_id=claim.worker_id,
        lease_until=claim.now + claim.lease_sec,
        accepted_at=claim.now,
    )
    return run.model_dump(mode="json")


def _ended(end: RunEnd) -> dict[str, Any]:
    fields = {
        "state": end.state,
        "ended_at": end.now,
        "metrics": encode_keys(dict(end.metrics or {})),
        "error": end.error.model_dump(mode="json") if end.error is not None else None,
    }
    if end.batches:  # listed by batch_records beside flowkit_batches (mongo_batches.py)
        fields["batches"] = [
            {"batch_uid": b.batch_uid, "metrics": encode_keys(b.metrics)} for b in end.batches
        ]
    return {"$set": fields}


def _run_from_doc(doc: dict[str, Any]) -> RunRecord:
    doc = {k: v for k, v in doc.items() if k != "_id"}
    return RunRecord.model_validate({**doc, "metrics": decode_keys(doc.get("metrics", {}))})


class WorkerRecords(MongoStorePart):
    """The runs and worker-state methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _runs: Any
    _workers: Any

    # -- runs ------------------------------------------------------------------------

    async def claim_run(
        self, task_id: str, node_id: str, attempt: int, worker_id: str, lease_sec: float, now: float
    ) -> bool:
        """First claim, or the same worker again (a redelivered command: its lease is renewed)."""
        return (await self.claim_runs([RunClaim(task_id, node_id, attempt, worker_id, lease_sec, now)]))[0]

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[bool]:
        """One unordered ``insert_many``: the attempts nobody claimed are this worker's at once;
        a duplicate key is a claim made before, this worker's again only if it still runs it."""
        for task_id in dict.fromkeys(c.task_id for c in claims):
            await self._require(task_id)
        await self.ensure_indexes()
        docs = [{"_id": _run_id(c.task_id, c.node_id, c.attempt), **_claimed(c)} for c in claims]
        taken = await insert_new(self._runs, docs)
        return [new or await self._claimed_again(c) for c, new in zip(claims, taken, strict=True)]

    async def _claimed_again(self, claim: RunClaim) -> bool:
        mine = {"_id": _run_id(claim.task_id, claim.node_id, claim.attempt)} | _held_by(claim.worker_id)
        result = await self._runs.update_one(mine, {"$set": {"lease_until": claim.now + claim.lease_sec}})
        return bool(result.matched_count)

    async def bar_run(self, task_id: str, node_id: str, attempt: int, now: float) -> bool:
        """An insert, like a claim: of a worker's claim and this, the first wins."""
        await self._require(task_id)
        await self.ensure_indexes()
        run_id = _run_id(task_id, node_id, attempt)
        doc = {"_id": run_id, **barred_run(task_id, node_id, attempt, now).model_dump(mode="json")}
        (barred,) = await insert_new(self._runs, [doc])
        if barred:
            return True
        existing = await self._runs.find_one({"_id": run_id}, {"worker_id": 1})
        return existing is not None and existing.get("worker_id") == BARRED

    async def renew_runs(
        self, worker_id: str, runs: Iterable[tuple[str, str, int]], lease_sec: float, now: float
    ) -> int:
        """One bulk write of updates by ``_id`` (a filter on ``worker_id`` alone scans on FerretDB)."""
        renewal = {"$set": {"lease_until": now + lease_sec}}
        requests = [UpdateOne({"_id": _run_id(*run)} | _held_by(worker_id), renewal) for run in runs]
        # matched, not modified: a renewal to the same instant is still a held attempt.
        return await bulk_update(self._runs, requests)

    async def end_run(
        self,
        task_id: str,
        node_id: str,
        attempt: int,
        worker_id: str,
        state: RunState,
        *,
        metrics: dict[str, float] | None = None,
        error: NodeError | None = None,
        now: float,
    ) -> bool:
        end = RunEnd(task_id, node_id, attempt, worker_id, state, now, metrics, error)
        return (await self.end_runs([end]))[0]

    async def end_runs(self, ends: Sequence[RunEnd]) -> list[bool]:
        """One bulk write of conditional updates by ``_id``. When fewer matched than were
        sent (a lease lapsed, a task deleted), each run's record says which were recorded:
        an outcome of this worker's at this instant is its own."""
        requests = [
            UpdateOne({"_id": _run_id(e.task_id, e.node_id, e.attempt)} | _held_by(e.worker_id), _ended(e))
            for e in ends
        ]
        if await bulk_update(self._runs, requests) == len(ends):
            recorded = [True] * len(ends)
        else:
            recorded = [await self._ended_as_asked(e) for e in ends]
        counted = [e.task_id for e, done in zip(ends, recorded, strict=True) if done and e.batches]
        for task_id in dict.fromkeys(counted):
            self._bump(task_id)
        return recorded

    async def _ended_as_asked(self, end: RunEnd) -> bool:
        doc = await self._runs.find_one({"_id": _run_id(end.task_id, end.node_id, end.attempt)})
        if doc is None:
            await self._require(end.task_id)
            return False
        return (doc.get("worker_id"), doc.get("state"), doc.get("ended_at")) == (
            end.worker_id,
            end.state,
            end.now,
        )

    async def get_runs(self, task_id: str) -> list[RunRecord]:
        """Sorted by node id, then attempt."""
        order = [("node_id", ASCENDING), ("attempt", ASCENDING)]
        docs = await self._runs.find({"task_id": task_id}).sort(order).to_list(length=None)
        if not docs:
            await self._require(task_id)
        return [_run_from_doc(d) for d in docs]

    async def get_run(self, task_id: str, node_id: str, attempt: int) -> RunRecord | None:
        doc = await self._runs.find_one({"_id": _run_id(task_id, node_id, attempt)})
        if doc is None:
            await self._require(task_id)
            return None
        return _run_from_doc(doc)

    # -- worker states ---------------------------------------------------------------

    async def set_worker_state(self, worker_id: str, fields: dict[str, Any]) -> None:
        paths = worker_state_paths(fields)
        update = {encode_path(p): encode_keys(v) for p, v in zip(paths, fields.values(), strict=True)}
        update.update(worker_id=worker_id, updated_at=time.time())
        query = {"_id": worker_id}
        try:
            try:
                await self._workers.update_one(query, {"$set": update}, upsert=True)
            except DuplicateKeyError:  # two first upserts raced: the document exists now
                await self._workers.update_one(query, {"$set": update})
        except WriteError as e:
            if e.code != _PATH_NOT_VIABLE:
                raise
            message = (e.details or {}).get("errmsg", str(e))
            raise ValueError(
                f"worker state of {worker_id!r}: a key runs through a non-mapping: {message}"
            ) from e

    async def get_worker_state(self, worker_id: str) -> dict[str, Any] | None:
        doc = await self._workers.find_one({"_id": worker_id}, _NO_ID)
        return decode_keys(doc) if doc is not None else None

    async def list_worker_states(self) -> list[dict[str, Any]]:
        """Sorted by worker id."""
        docs = await self._workers.find({}, _NO_ID).sort("worker_id", ASCENDING).to_list(length=None)
        return [decode_keys(d) for d in docs]
