"""The seed docs' examples, written as the docs show them, on the embedded default."""

from __future__ import annotations

import pytest

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
