"""The engine calls the operator makes, in one place (the contract's "Engine API").

Thin: each method is one coordinator call. Where the installed engine lacks a call of
the contract yet, the gap is named here (and nowhere else) with the fallback used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flowkit.coordinator.core import Coordinator
from flowkit.errors import FlowKitError, TaskNotFound
from flowkit.states import TaskStatus


class EngineGap(FlowKitError):
    """The installed FlowKit engine has no such call yet."""


class Engine:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._calls: Any = coordinator  # the contract's calls, some of which may be missing

    @property
    def has_change_feed(self) -> bool:
        return hasattr(self.coordinator, "on_change")

    @property
    def has_labels(self) -> bool:
        return "labels" in inspect.signature(self.coordinator.create_task).parameters

    def on_change(self, callback: Callable[[str], None]) -> Callable[[], None] | None:
        if not self.has_change_feed:
            return None
        unsubscribe: Callable[[], None] = self._calls.on_change(callback)
        return unsubscribe

    async def create(
        self, task_id: str, graph: Mapping[str, Any], params: dict[str, Any], labels: dict[str, str]
    ) -> None:
        if self.has_labels:
            await self._calls.create_task(params=params, graph=graph, task_id=task_id, labels=labels)
        else:
            await self.coordinator.create_task(params=params, graph=graph, task_id=task_id)

    async def status(self, task_id: str) -> TaskStatus | None:
        try:
            return await self.coordinator.get_status(task_id)
        except TaskNotFound:
            return None

    async def cancel(self, task_id: str, reason: str) -> None:
        await self.coordinator.cancel_task(task_id, reason)

    async def delete(self, task_id: str) -> bool:
        if hasattr(self.coordinator, "delete_task"):
            return bool(await self._calls.delete_task(task_id))
        return bool(await self.coordinator.store.delete_task(task_id))

    async def suspend(self, task_id: str) -> None:
        await self._call("suspend_task", task_id)

    async def resume(self, task_id: str) -> None:
        await self._call("resume_task", task_id)

    async def retry(self, task_id: str) -> list[str]:
        return list(await self._call("retry_task", task_id))

    async def list_tasks(self, limit: int = 10_000) -> list[TaskStatus]:
        return list(await self.coordinator.store.list_tasks(limit=limit))

    async def _call(self, name: str, task_id: str) -> Any:
        method = getattr(self.coordinator, name, None)
        if method is None:
            raise EngineGap(f"this FlowKit engine has no Coordinator.{name}() yet")
        return await method(task_id)
