"""A command that lands on a busy worker's partition is not stuck there.

Kafka gives each partition of a role's command topic to one worker of the group. A
worker whose slots are all taken cannot run a command it has read, and nobody else may
read that partition while it holds it: with a streaming reader in the slot waiting for
exactly that command, the task would hang forever. So the worker declines a command
it found no slot for within ``slot_wait_sec``, and the coordinator sends it again on
another partition (the ``hop`` in its key), until a worker with a free slot takes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from flowkit import Coordinator, CoordinatorConfig, Worker, WorkerConfig
from flowkit.states import State
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext

TASKS = 12  # each lands on the busy worker's half of the partitions with p = 1/2


class Hold(Handler):
    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.release = asyncio.Event()

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.running.set()
        await self.release.wait()
        return BatchResult()


class Quick(Handler):
    def __init__(self) -> None:
        self.ran: list[str] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.ran.append(ctx.task_id)
        return BatchResult(metrics={"ran": 1})


async def test_a_command_declined_by_a_busy_worker_runs_on_a_free_one(
    kafka_bootstrap: str, kafka_topic_prefix: str, mongo_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wire = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": kafka_topic_prefix}
    coordinator = Coordinator(db=mongo_db, cfg=CoordinatorConfig(**wire))
    hold, quick = Hold(), Quick()
    busy = Worker(
        db=mongo_db,
        cfg=WorkerConfig(**wire, roles=["hold", "quick"], capacity=1, slot_wait_sec=0.3),
        handlers={"hold": hold, "quick": quick},
    )
    free = Worker(
        db=mongo_db, cfg=WorkerConfig(**wire, roles=["quick"], capacity=4), handlers={"quick": quick}
    )
    await coordinator.start()
    await busy.start()
    await free.start()
    caplog.set_level(logging.INFO, logger="flowkit.worker")
    try:
        holding = await coordinator.create_task(graph={"nodes": [{"node_id": "hold", "type": "hold"}]})
        await asyncio.wait_for(hold.running.wait(), 30)
        graph = {"nodes": [{"node_id": "q", "type": "quick"}]}
        tasks = [await coordinator.create_task(graph=graph) for _ in range(TASKS)]
        async with asyncio.timeout(90):
            ended = [await coordinator.wait_task(task_id) for task_id in tasks]
        # Every one ran, exactly once, while the busy worker's only slot was still held.
        assert [s.status for s in ended] == [State.FINISHED] * TASKS
        assert sorted(quick.ran) == sorted(tasks)
        assert not hold.release.is_set()
        declined = [r for r in caplog.records if "declined" in r.getMessage()]
        assert declined, "no command landed on the busy worker: the test proved nothing"
        hold.release.set()
        assert (await coordinator.wait_task(holding, timeout=30)).status == State.FINISHED
    finally:
        hold.release.set()
        await free.stop()
        await busy.stop()
        await coordinator.stop()
