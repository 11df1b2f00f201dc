"""Task ownership in MongoDB: fencing tokens and coordinator liveness (part of MongoStore).

Who holds a task is split over two kinds of document, each with one writer:

- the task document names its ``owner`` and ``fence`` (the token, +1 at each claim).
  Only a claim, a release and the task's creation write them; the owner's fenced writes
  carry both in their filter, so a coordinator that lost the task writes nothing. A
  claim then moves the task's node documents on to its token (:mod:`.mongo_nodes`);
- ``flowkit_coordinators`` holds one document per coordinator, ``{_id: coordinator id,
  until: epoch seconds}``, written by that coordinator alone (its renewal loop, its own
  claims and creations). A task is held while its owner's document has ``until >= now``.

Not a deadline in each task document: FerretDB 1.24 runs every update as a read, the
operators applied in its own process and a write of the whole document by ``_id``, so
two writers of one document lose each other's changes (a renewal of every task of a
coordinator, racing that coordinator's task writes, erased them). With liveness per
coordinator, renewing is one write to a document nobody else writes.

A claim is not one ``find_one_and_update`` either: racing conditional updates can all
"match" on FerretDB. The one atomic step it has is a unique key, so a claim takes a
ticket: ``flowkit_claims`` holds one document per (task, token), ``_id`` =
``json.dumps([task_id, token])``, and of racing claimers exactly one inserts it. Only
that claimer then moves the task's ``fence`` on (an update guarded by the old token).

A ticket above the task's fence belongs to a claim in flight, or to a claimer that died
between its ticket and its task update; once that claim's lease would have run out (the
ticket's ``until``), the next token is free. A claimer finding its own ticket (the same
claim tried again) carries on with it.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from ..states import TERMINAL
from .base import Fence
from .mongo_part import MongoStorePart

_NOT_TERMINAL = {"status": {"$nin": sorted(s.value for s in TERMINAL)}}


class TaskLeases(MongoStorePart):
    """The ownership methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _tasks: Any
    _claims: Any
    _coordinators: Any
    _known: set[str]

    async def _stamp_nodes(self, task_id: str, gen: str, token: int) -> None:
        raise NotImplementedError

    async def claim_task(self, task_id: str, owner: str, lease_sec: float, now: float) -> Fence | None:
        """Take a task not terminal, unowned, of a coordinator not live at ``now`` or of
        ``owner`` itself: of racing claimers exactly one wins."""
        doc = await self._tasks.find_one(
            {"_id": task_id, **_NOT_TERMINAL}, {"owner": 1, "fence": 1, "order": 1}
        )
        if doc is None or not await self._may_take(doc.get("owner"), owner, now):
            return None
        held = int(doc.get("fence", 0))
        token = await self._take_ticket(task_id, held + 1, owner, now + lease_sec, now)
        if token is None:
            return None
        # Live before the claim shows: a task of a coordinator never seen is claimable.
        await self._keep_alive(owner, now + lease_sec)
        result = await self._tasks.update_one(
            {"_id": task_id, "fence": held}, {"$set": {"owner": owner, "fence": token}}
        )
        if not result.matched_count:  # deleted meanwhile (or, on FerretDB, a slower claim won)
            return None
        if held:  # a first claim has no earlier owner to fence out: its nodes stay as created
            await self._stamp_nodes(task_id, str(doc["order"]), token)
        self._known.add(task_id)
        self._bump(task_id)
        return Fence(owner, token)

    async def _may_take(self, current: str | None, claimer: str, now: float) -> bool:
        if current is None or current == claimer:
            return True
        live = await self._coordinators.find_one({"_id": current, "until": {"$gte": now}}, {"_id": 1})
        return live is None

    async def _take_ticket(
        self, task_id: str, token: int, owner: str, until: float, now: float
    ) -> int | None:
        """The first free token from ``token`` on, or None while another claim holds one."""
        while True:
            ticket = {"_id": json.dumps([task_id, token]), "task_id": task_id, "owner": owner, "until": until}
            try:
                await self._claims.insert_one(ticket)
                return token
            except DuplicateKeyError:
                taken = await self._claims.find_one({"_id": ticket["_id"]})
                if taken is not None and taken["owner"] == owner:
                    return token  # ours: this claim again, after a lost reply or a restart
                if taken is not None and taken["until"] >= now:
                    return None
                token += 1  # its claimer died before moving the fence on, and its lease ran out

    async def _keep_alive(self, coordinator_id: str, until: float) -> None:
        """Keep the coordinator live until ``until`` at least (never moved back).

        Its own document, written by its claims and creations here and by its renewal
        loop: in one process, but not serialized with each other. On FerretDB one of two
        racing writes may be lost; both set about now + lease, so the coordinator is live
        a little shorter or longer than it should be (by the time between the two writes,
        well under one renewal period) until its next renewal sets it right.
        """
        await self._upsert_coordinator(coordinator_id, {"$max": {"until": until}})

    async def _upsert_coordinator(self, coordinator_id: str, update: dict[str, Any]) -> None:
        key = {"_id": coordinator_id}
        try:
            await self._coordinators.update_one(key, update, upsert=True)
        except DuplicateKeyError:  # two first upserts raced: the document exists now
            await self._coordinators.update_one(key, update)

    async def renew_leases(self, owner: str, lease_sec: float, now: float) -> set[str]:
        """One write, to the coordinator's own document; terminal tasks keep their owner
        but are not returned."""
        await self._upsert_coordinator(owner, {"$set": {"until": now + lease_sec}})
        docs = await self._tasks.find({"owner": owner, **_NOT_TERMINAL}, {"_id": 1}).to_list(length=None)
        return {d["_id"] for d in docs}

    async def release_task(self, fence: Fence, task_id: str) -> None:
        """Nothing happens unless ``fence`` still holds the task."""
        result = await self._tasks.update_one(
            {"_id": task_id, "owner": fence.owner, "fence": fence.token}, {"$set": {"owner": None}}
        )
        if result.matched_count:
            self._bump(task_id)

    async def claimable_tasks(self, now: float, limit: int = 100, *, owner: str | None = None) -> list[str]:
        """Oldest first; the live coordinators are read once, then the tasks none of the
        others holds."""
        live = await self._coordinators.find({"until": {"$gte": now}}, {"_id": 1}).to_list(length=None)
        others = sorted(d["_id"] for d in live if d["_id"] != owner)
        query = {**_NOT_TERMINAL, "owner": {"$nin": others}}
        cursor = self._tasks.find(query, {"_id": 1}).sort("order", ASCENDING).limit(limit)
        return [d["_id"] for d in await cursor.to_list(length=limit)]
