"""Requests to a task's owner in MongoDB (part of MongoStore): ``flowkit_cancels``, one per task.

Any process may ask for a cancel (``flowkit cancel``) or a suspend / resume, while the
task document has one writer at a time, its owner coordinator: on FerretDB 1.24 an
update is a read-modify-write of the whole document, so a request written into the task
document could erase the owner's write, or be erased by it. The requests are a document
of their own, ``{_id: task id, order, reason?, at?, suspend?}``, read with the task
(``get_task``) or alone (``cancel_request``). The collection keeps its first name,
``flowkit_cancels``, so stores written by earlier versions read the same.

``order`` is the task document's creation id: a request that lands after ``delete_task``
removed the task (the two raced) is ignored by a task created afresh under the same id.
Two requests racing for one task: one value stands, either will do.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..errors import TaskNotFound
from .mongo_part import MongoStorePart


class TaskRequests(MongoStorePart):
    """The request methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _tasks: Any
    _cancels: Any

    async def request_cancel(self, task_id: str, reason: str) -> None:
        """Upsert the task's cancel request; the task document is not written."""
        await self._request(task_id, {"reason": reason, "at": time.time()})

    async def request_suspend(self, task_id: str, suspended: bool) -> None:
        """Ask the owner to hold back new nodes (or to go on); the task document is not written."""
        await self._request(task_id, {"suspend": suspended})

    async def _request(self, task_id: str, fields: dict[str, Any]) -> None:
        doc = await self._tasks.find_one({"_id": task_id}, {"order": 1})
        if doc is None:
            raise TaskNotFound(task_id)
        await self._write_request(task_id, doc["order"], fields)
        self._bump(task_id)

    async def _write_request(self, task_id: str, order: Any, fields: dict[str, Any]) -> None:
        key = {"_id": task_id}
        existing = await self._cancels.find_one(key, {"order": 1})
        if existing is not None and existing.get("order") != order:
            await self._cancels.delete_one({"_id": task_id, "order": existing.get("order")})
        update = {"$set": {**fields, "order": order}}
        try:
            await self._cancels.update_one(key, update, upsert=True)
        except DuplicateKeyError:  # two first upserts raced: the document exists now
            await self._cancels.update_one(key, update)

    async def cancel_request(self, task_id: str) -> str | None:
        """The reason, or None: no request, no task, or a request of a deleted namesake."""
        task = await self._tasks.find_one({"_id": task_id}, {"order": 1})
        if task is None:
            return None
        return (await self._requests_of(task_id, task["order"])).get("reason")

    async def _requests_of(self, task_id: str, order: Any) -> dict[str, Any]:
        """The requests for the task created as ``order`` (empty if none)."""
        doc = await self._cancels.find_one({"_id": task_id})
        if doc is None or doc.get("order") != order:
            return {}
        return dict(doc)
