"""LocalRuntime's interface over the real services: the engine's scenarios on both backends.

``tests/engine/conftest.py`` runs every scenario of a module that uses ``LocalRuntime``
twice: embedded, and with this class in its place (coordinator and one worker per role
in this process, but talking over real Kafka and the MongoDB-protocol server, each
runtime on its own topic prefix and database). So the two backends cannot drift.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

from flowkit import Coordinator, CoordinatorConfig, Worker, WorkerConfig
from flowkit.graph import GraphSpec
from flowkit.states import TaskStatus
from flowkit.worker.handlers.base import Handler

# Short intervals: a scenario that waits on a lease or a poll finishes in seconds.
FAST_COORDINATOR = {"lease_check_interval_sec": 0.5, "adopt_interval_sec": 0.5}
FAST_WORKER = {"hb_interval_sec": 0.5, "db_cancel_poll_ms": 200, "pull_poll_ms_default": 200}


class DistributedRuntime:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 16,
        coordinator_config: CoordinatorConfig | None = None,
        worker_config: WorkerConfig | None = None,
    ) -> None:
        from pymongo import AsyncMongoClient

        self._client: Any = AsyncMongoClient(
            os.environ["FLOWKIT_TEST_MONGO_URL"], serverSelectionTimeoutMS=10_000
        )
        name = f"engine_{uuid.uuid4().hex[:12]}"
        self.db = self._client[name]
        wire = {"kafka_bootstrap": os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"], "topic_prefix": f"{name}."}
        cfg = (coordinator_config or CoordinatorConfig()).model_copy(update={**FAST_COORDINATOR, **wire})
        if cfg.worker_types is None:
            cfg = cfg.model_copy(update={"worker_types": list(handlers)})
        self.coordinator = Coordinator(db=self.db, cfg=cfg)
        self.store = self.coordinator.store
        base = (worker_config or WorkerConfig()).model_dump() | FAST_WORKER | wire
        self.workers = [
            Worker(
                db=self.db,
                cfg=WorkerConfig.model_validate(
                    base | {"roles": [role], "capacity": concurrency, "worker_id": f"{name}-{role}"}
                ),
                handlers={role: handler},
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
        await self._client.drop_database(self.db.name)
        await self._client.close()

    async def __aenter__(self) -> DistributedRuntime:
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
        task_id = await self.submit(graph, params)
        return await self.coordinator.wait_task(task_id, timeout=None if timeout is None else timeout * 4)
