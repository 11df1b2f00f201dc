"""Task ownership in MongoDB: leases with fencing tokens (part of MongoStore).

The lease lives in the task document: ``owner``, ``owner_until`` (epoch seconds) and
``fence``, the token that grows by one at each claim. Fenced writes carry owner and
token in their filter, so on MongoDB a coordinator that lost the task writes nothing.

A claim is not one ``find_one_and_update``: FerretDB 1.24 runs every update as a read,
the operators applied in its own process and a write of the whole document by ``_id``,
so racing conditional updates can all "match" (and concurrent updates of one document
can lose each other's fields). The one atomic step it has is a unique key, so a claim
takes a ticket: ``flowkit_claims`` holds one document per (task, token), ``_id`` =
``json.dumps([task_id, token])``, and of racing claimers exactly one inserts it. Only
that claimer then moves the task's ``fence`` on (an update guarded by the old token).

A ticket above the task's fence belongs to a claim in flight, or to a claimer that died
between its ticket and its task update; once that claimer's lease would have run out
(``until``), the next token is free. A claimer finding its own ticket (the same claim
tried again) carries on with it.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from ..states import TERMINAL
from .base import Fence

_TERMINAL = sorted(s.value for s in TERMINAL)


def claimable(now: float) -> dict[str, Any]:
    """The filter of tasks a coordinator may take at ``now``."""
    return {"status": {"$nin": _TERMINAL}, "$or": [{"owner": None}, {"owner_until": {"$lt": now}}]}


class TaskLeases:
    """The ownership methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _tasks: Any
    _claims: Any
    _known: set[str]

    def _bump(self, task_id: str) -> None:
        raise NotImplementedError

    async def claim_task(self, task_id: str, owner: str, lease_sec: float, now: float) -> Fence | None:
        """Take a task not terminal, unowned or with its lease run out before ``now``:
        of racing claimers exactly one wins."""
        doc = await self._tasks.find_one({"_id": task_id, **claimable(now)}, {"fence": 1})
        if doc is None:
            return None
        held = int(doc.get("fence", 0))
        token = await self._take_ticket(task_id, held + 1, owner, now + lease_sec, now)
        if token is None:
            return None
        result = await self._tasks.update_one(
            {"_id": task_id, "fence": held},
            {"$set": {"owner": owner, "owner_until": now + lease_sec, "fence": token}},
        )
        if not result.matched_count:  # deleted meanwhile (or, on FerretDB, a slower claim won)
            return None
        self._known.add(task_id)
        self._bump(task_id)
        return Fence(owner, token)

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

    async def renew_leases(self, owner: str, lease_sec: float, now: float) -> set[str]:
        """Terminal tasks keep their owner but are neither renewed nor returned."""
        held = {"owner": owner, "status": {"$nin": _TERMINAL}}
        await self._tasks.update_many(held, {"$set": {"owner_until": now + lease_sec}})
        docs = await self._tasks.find(held, {"_id": 1}).to_list(length=None)
        return {d["_id"] for d in docs}

    async def release_task(self, fence: Fence, task_id: str) -> None:
        """Nothing happens unless ``fence`` still holds the task."""
        result = await self._tasks.update_one(
            {"_id": task_id, "owner": fence.owner, "fence": fence.token},
            {"$set": {"owner": None, "owner_until": 0.0}},
        )
        if result.matched_count:
            self._bump(task_id)

    async def claimable_tasks(self, now: float, limit: int = 100) -> list[str]:
        """Oldest first."""
        cursor = self._tasks.find(claimable(now), {"_id": 1}).sort("order", ASCENDING).limit(limit)
        return [d["_id"] for d in await cursor.to_list(length=limit)]
