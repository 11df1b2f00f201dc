"""Embedded mode: coordinator and workers in one process, in-process bus, in-memory store.

>>> async with LocalRuntime(handlers={"processor": MyHandler()}) as runtime:
...     status = await runtime.run(graph, params={"day": "2026-11-23"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from .bus.memory import MemoryBus
from .config import CoordinatorConfig, WorkerConfig
from .coordinator.core import Coordinator
from .graph import GraphSpec
from .states import TaskStatus
from .store.memory import MemoryStore
from .worker.handlers.base import Handler
from .worker.runtime import Worker

DEFAULT_CONCURRENCY = 16


class Runtime:
    """What every runtime offers: a started coordinator with workers, ``submit`` and ``run``.
    Subclasses build ``coordinator`` and implement ``start``/``stop``."""

    coordinator: Coordinator

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def submit(self, graph: Mapping[str, Any] | GraphSpec, params: dict[str, Any] | None = None) -> str:
        return await self.coordinator.create_task(params=params or {}, graph=graph)

    async def run(
        self,
        graph: Mapping[str, Any] | GraphSpec,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> TaskStatus:
        """Create the task and wait for it to end; returns its final status."""
        task_id = await self.submit(graph, params)
        return await self.coordinator.wait_task(task_id, timeout=timeout)


class LocalRuntime(Runtime):
    """One coordinator and one worker per role, sharing a MemoryBus and a MemoryStore."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        coordinator_config: CoordinatorConfig | None = None,
        worker_config: WorkerConfig | None = None,
    ) -> None:
        self.store = MemoryStore()
        self.bus = MemoryBus()
        cfg = coordinator_config or CoordinatorConfig()
        if cfg.worker_types is None:
            cfg = cfg.model_copy(update={"worker_types": list(handlers)})
        self.coordinator = Coordinator(cfg=cfg, store=self.store, bus=self.bus)
        base = (worker_config or WorkerConfig()).model_dump()
        self.workers = [
            Worker(
                cfg=WorkerConfig.model_validate(
                    base | {"roles": [role], "capacity": concurrency, "worker_id": f"local-{role}"}
                ),
                handlers={role: handler},
                store=self.store,
                bus=self.bus,
            )
            for role, handler in handlers.items()
        ]

    async def start(self) -> None:
        await self.coordinator.start()
        for worker in self.workers:
            await worker.start()

    async def stop(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.coordinator.stop()
