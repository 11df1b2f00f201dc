"""What ``flowkit submit``, ``status``, ``watch``, ``cancel``, ``tasks`` and ``workers`` do,
from any machine that reaches the installation's MongoDB (and Kafka, to send notices).

A submitted task is stored *unowned* and announced: a running coordinator adopts it at
once (or within its adopt interval, should the notice be lost). A cancel is a request in
the task document, announced to the coordinator that holds the task.

>>> async with open_client(ClientSettings.load(), kafka=True) as client:
...     submitted = await client.submit(spec, {"day": "2026-11-23"})
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..backends import resolve_backends
from ..backends.feed import ChangeFeed
from ..config import ConnectionSettings
from ..coordinator.core import new_task_status, reopen_task
from ..errors import FlowKitError, TaskNotFound
from ..graph import GraphSpec, graph_document
from ..states import State, TaskStatus
from ..store.base import Store
from .connection import mongo_error, open_database, reach_kafka, reach_mongo
from .follow import read_task

CLIENT_TIMEOUT_MS = 5_000
"""How long a command waits for MongoDB to answer before saying it cannot reach it."""


@dataclass(frozen=True)
class Submitted:
    """The task's id, and False in ``created`` when a task with that id existed already."""

    task_id: str
    created: bool


@dataclass(frozen=True)
class CancelRequest:
    """The task as it was when the cancel was asked for; ``requested`` False when it had ended."""

    status: TaskStatus
    requested: bool


class Client:
    """Task operations over a store; ``feed`` (None: MongoDB only) carries the notices."""

    def __init__(self, store: Store, feed: ChangeFeed | None = None) -> None:
        self.store = store
        self.feed = feed

    async def submit(self, spec: GraphSpec, params: dict[str, Any], task_id: str | None = None) -> Submitted:
        """Store the task unowned and wake the coordinators. With ``task_id`` it is
        idempotent: a task with that id is left as it is."""
        task_id = task_id or uuid.uuid4().hex
        status = new_task_status(task_id, spec, params, owner=None)
        created = await self.store.create_task(status, graph_document(spec))
        self._announce(task_id, "new")
        return Submitted(task_id, created)

    async def cancel(self, task_id: str, reason: str = "cancelled by user (flowkit cancel)") -> CancelRequest:
        """Ask the task's coordinator to cancel it; nothing to do if it has ended."""
        status = await read_task(self.store, task_id)
        if status.status.terminal:
            return CancelRequest(status, requested=False)
        await self.store.request_cancel(task_id, reason)
        self._announce(task_id, "cancel")
        return CancelRequest(status, requested=True)

    async def suspend(self, task_id: str, suspended: bool) -> TaskStatus:
        """Ask the task's coordinator to hold back new nodes (or to go on); the task as it was."""
        status = await read_task(self.store, task_id)
        if not status.status.terminal:
            await self.store.request_suspend(task_id, suspended)
            self._announce(task_id, "suspend")
        return status

    async def retry(self, task_id: str) -> list[str]:
        """Reopen a failed or cancelled task from its unfinished nodes (FlowKitError if it
        is neither); a coordinator adopts it. The ids of the nodes that run again."""
        again = await reopen_task(self.store, await read_task(self.store, task_id))
        self._announce(task_id, "new")
        return again

    async def delete(self, task_id: str, cancel_timeout: float | None) -> bool:
        """Remove an ended task with everything recorded for it. A running one is refused
        (FlowKitError) unless ``cancel_timeout``: then it is cancelled first and deleted
        once it ended, or after that many seconds. False if there was no such task."""
        try:
            status = await read_task(self.store, task_id)
        except TaskNotFound:
            return await self.store.delete_task(task_id)
        if not status.status.terminal:
            if cancel_timeout is None:
                raise FlowKitError(
                    f"task {task_id} is {status.status.value}: cancel it first, or delete with --cancel"
                )
            await self.cancel(task_id, "deleted (flowkit delete --cancel)")
            await self._wait_ended(task_id, cancel_timeout)
        return await self.store.delete_task(task_id)

    async def _wait_ended(self, task_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            version = self.store.version(task_id)
            if (await read_task(self.store, task_id)).status.terminal:
                return
            await self.store.wait_changed(task_id, version, min(left, 1.0))

    async def status(self, task_id: str) -> TaskStatus:
        """The task's status; TaskNotFound if there is none."""
        return await read_task(self.store, task_id)

    async def tasks(self, states: set[State] | None, limit: int) -> list[TaskStatus]:
        """The ``limit`` most recent tasks (in ``states``), oldest first."""
        return await self.store.list_tasks(states, limit)

    async def workers(self) -> list[dict[str, Any]]:
        """Every worker's state document, as the workers last wrote it."""
        return await self.store.list_worker_states()

    def _announce(self, task_id: str, reason: str) -> None:
        if self.feed is not None:
            self.feed.announce(task_id, reason)


@contextlib.asynccontextmanager
async def open_client(settings: ConnectionSettings, *, kafka: bool) -> AsyncIterator[Client]:
    """A Client on MongoDB, and with ``kafka`` the change feed too (notices sent and heard).

    Raises :class:`~flowkit.console.connection.Unreachable` when either cannot be
    reached, or MongoDB stops answering while inside.
    """
    from pymongo.errors import PyMongoError

    db = open_database(settings, timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        await reach_mongo(db, settings)
        if not kafka:
            from ..store.mongo import MongoStore

            yield Client(MongoStore(db))
            return
        backends = resolve_backends(db, None, None, settings, client_id=f"flowkit-cli-{uuid.uuid4().hex[:8]}")
        await reach_kafka(backends, settings)
        try:
            yield Client(backends.store, backends.feed)
        finally:
            await backends.release()  # sends the notices still pending first
    except PyMongoError as exc:
        raise mongo_error(exc, settings) from None
    finally:
        await db.client.close()
