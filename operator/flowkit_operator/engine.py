"""The engine calls the operator makes, in one place (the contract's "Engine API"):
each method is one :class:`flowkit.coordinator.core.Coordinator` call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowkit.coordinator.core import Coordinator
from flowkit.errors import TaskNotFound
from flowkit.states import TaskStatus

SWEEP_LIST_LIMIT = 100_000


class Engine:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def on_change(self, callback: Callable[[str], None]) -> Callable[[], None]:
        return self.coordinator.on_change(callback)

    async def create(
        self,
        task_id: str,
        graph: Mapping[str, Any],
        params: dict[str, Any],
        labels: dict[str, str],
        suspended: bool = False,
    ) -> None:
        await self.coordinator.create_task(
            params=params, graph=graph, task_id=task_id, labels=labels, suspended=suspended
        )

    async def status(self, task_id: str) -> TaskStatus | None:
        try:
            return await self.coordinator.get_status(task_id)
        except TaskNotFound:
            return None

    async def cancel(self, task_id: str, reason: str) -> None:
        await self.coordinator.cancel_task(task_id, reason)

    async def delete(self, task_id: str) -> bool:
        """Cancel (if running) and remove the task from the store."""
        return await self.coordinator.delete_task(task_id)

    async def suspend(self, task_id: str) -> None:
        await self.coordinator.suspend_task(task_id)

    async def resume(self, task_id: str) -> None:
        await self.coordinator.resume_task(task_id)

    async def retry(self, task_id: str) -> list[str]:
        return await self.coordinator.retry_task(task_id)

    async def list_tasks(self) -> list[TaskStatus]:
        return list(await self.coordinator.store.list_tasks(limit=SWEEP_LIST_LIMIT))
