"""``LocalRuntime``'s interface over real Kafka and MongoDB, in one process.

For testing handlers (and benchmarking) against the real services without starting
processes: one coordinator and one worker per role, each runtime on a database and a
topic prefix of its own, dropped at the end.

>>> async with DistributedRuntime(HANDLERS, kafka_bootstrap="localhost:9092",
...                               mongo_url="mongodb://localhost:27017") as rt:
...     status = await rt.run(graph)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..config import CoordinatorConfig, WorkerConfig
from ..coordinator.core import Coordinator
from ..embedded import DEFAULT_CONCURRENCY, Runtime
from ..worker.handlers.base import Handler
from ..worker.runtime import Worker

# Short intervals: whatever waits on a lease check or a poll is done in seconds.
FAST_COORDINATOR = {"lease_check_interval_sec": 0.5, "adopt_interval_sec": 0.5}
FAST_WORKER = {"hb_interval_sec": 0.5, "db_cancel_poll_ms": 200, "pull_poll_ms_default": 200}


async def drop_topics(kafka_bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix`` (a runtime's or a test's own)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


class DistributedRuntime(Runtime):
    """One coordinator and one worker per role over Kafka and MongoDB (a throw-away database)."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        kafka_bootstrap: str,
        mongo_url: str,
        concurrency: int = DEFAULT_CONCURRENCY,
        coordinator_config: CoordinatorConfig | None = None,
        worker_config: WorkerConfig | None = None,
    ) -> None:
        from pymongo import AsyncMongoClient

        self._client: Any = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
        name = f"flowkit_rt_{uuid.uuid4().hex[:12]}"
        self.db = self._client[name]
        self._kafka, self._prefix = kafka_bootstrap, f"{name}."
        wire = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": self._prefix}
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
        await drop_topics(self._kafka, self._prefix)
