"""The seed docs' examples, written as the docs show them, on the embedded default."""

from __future__ import annotations

import asyncio

import pytest
from engine_support import wait_for

from flowkit import ConfigError, Coordinator, CoordinatorConfig, WorkerConfig
from flowkit.states import State
from flowkit.worker import Worker
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class MyHandler(Handler):
    def __init__(self) -> None:
        self.payloads: list[object] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.payloads.append(batch.payload)
        return BatchResult(success=True, metrics={"processed": 1})


async def test_quick_example_runs_with_no_db_on_the_embedded_default() -> None:
    handler = MyHandler()
    coordinator = Coordinator(cfg=CoordinatorConfig())
    await coordinator.start()
    worker = Worker(cfg=WorkerConfig(roles=["processor"]), handlers={"processor": handler})
    await worker.start()
    try:
        graph = {
            "nodes": [
                {
                    "node_id": "process_data",
                    "type": "processor",
                    "io": {"input_inline": {"data": "hello world"}},
                }
            ],
            "edges": [],
        }
        task_id = await coordinator.create_task(params={}, graph=graph)
        status = await coordinator.wait_task(task_id, timeout=5)
    finally:
        await worker.stop()
        await coordinator.stop()
    assert status.status == State.FINISHED
    assert status.nodes["process_data"].metrics == {"processed": 1}
    assert handler.payloads == [{"data": "hello world"}]  # the default iter_batches: input_inline


async def test_a_mongodb_database_as_db_is_refused_with_a_clear_message() -> None:
    class FakeDatabase:  # stands for a pymongo/motor database object
        pass

    with pytest.raises(ConfigError, match="MongoDB"):
        Coordinator(db=FakeDatabase(), cfg=CoordinatorConfig())


def test_embedded_default_outside_an_event_loop_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match=r"asyncio\.run"):
        Coordinator(cfg=CoordinatorConfig())


async def test_worker_health_check_from_the_seed_docs_reads_the_live_run() -> None:
    release = asyncio.Event()
    running = asyncio.Event()

    class Blocking(Handler):
        async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
            running.set()
            await release.wait()
            return BatchResult(success=True)

    async def check_worker_health(worker: Worker) -> dict[str, object]:  # as written in the seed docs
        return {
            "worker_id": worker.worker_id,
            "roles": worker.cfg.roles,
            "busy": worker._busy,
            "active_task": worker.active.task_id if worker.active else None,
            "last_heartbeat": worker.last_heartbeat_time,
        }

    coordinator = Coordinator(cfg=CoordinatorConfig())
    await coordinator.start()
    worker = Worker(
        cfg=WorkerConfig(roles=["processor"], hb_interval_sec=0.01), handlers={"processor": Blocking()}
    )
    await worker.start()
    try:
        idle = await check_worker_health(worker)
        task_id = await coordinator.create_task(
            params={}, graph={"nodes": [{"node_id": "a", "type": "processor"}]}
        )
        await asyncio.wait_for(running.wait(), 5)
        await wait_for(lambda: worker.last_heartbeat_time is not None)
        busy = await check_worker_health(worker)
        release.set()
        status = await coordinator.wait_task(task_id, timeout=5)
    finally:
        await worker.stop()
        await coordinator.stop()
    assert idle["busy"] is False and idle["active_task"] is None
    assert busy["busy"] is True and busy["active_task"] == task_id
    assert busy["roles"] == ["processor"]
    assert status.status == State.FINISHED
