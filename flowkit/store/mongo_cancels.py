"""Cancel requests in MongoDB (part of MongoStore): ``flowkit_cancels``, one per task.

Any process may ask for a cancel (``flowkit cancel``), while the task document has one
writer at a time, its owner coordinator: on FerretDB 1.24 an update is a read-modify-write
of the whole document, so a request written into the task document could erase the
owner's write, or be erased by it. The request is a document of its own, ``{_id: task
id, reason, at, order}``, read with the task (``get_task``) or alone (``cancel_request``).

``order`` is the task document's creation id: a request that lands after ``delete_task``
removed the task (the two raced) is ignored by a task created afresh under the same id.
Two requests racing for one task: one reason stands, either will do.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..errors import TaskNotFound


class TaskCancels:
    """The cancel-request methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _tasks: Any
    _cancels: Any

    def _bump(self, task_id: str) -> None:
        raise NotImplementedError

    async def request_cancel(self, task_id: str, reason: str) -> None:
        """Upsert the task's cancel request; the task document is not written."""
        doc = await self._tasks.find_one({"_id": task_id}, {"order": 1})
        if doc is None:
            raise TaskNotFound(task_id)
        await self._write_cancel(task_id, doc["order"], reason)
        self._bump(task_id)

    async def _write_cancel(self, task_id: str, order: Any, reason: str) -> None:
        key = {"_id": task_id}
        update = {"$set": {"reason": reason, "at": time.time(), "order": order}}
        try:
            await self._cancels.update_one(key, update, upsert=True)
        except DuplicateKeyError:  # two first upserts raced: the document exists now
            await self._cancels.update_one(key, update)

    async def cancel_request(self, task_id: str) -> str | None:
        """The reason, or None: no request, no task, or a request of a deleted namesake."""
        doc = await self._cancels.find_one({"_id": task_id})
        if doc is None:
            return None
        task = await self._tasks.find_one({"_id": task_id}, {"order": 1})
        return _reason(doc, task["order"]) if task is not None else None

    async def _cancel_of(self, task_id: str, order: Any) -> str | None:
        """The reason of the request for the task created as ``order``, if any."""
        return _reason(await self._cancels.find_one({"_id": task_id}), order)


def _reason(doc: dict[str, Any] | None, order: Any) -> str | None:
    if doc is None or doc.get("order") != order:
        return None
    reason: str = doc["reason"]
    return reason
