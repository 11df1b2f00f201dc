"""Per-role concurrency limits in the coordinator, and what a waiting node's status says."""

from __future__ import annotations

import asyncio

from engine_support import wait_for

from flowkit import CoordinatorConfig, LocalRuntime
from flowkit.states import State
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class CountsConcurrency(Handler):
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        return BatchResult(success=True)


async def test_role_concurrency_limits_running_nodes_of_a_role() -> None:
    handler = CountsConcurrency()
    graph = {"nodes": [{"node_id": f"n{i}", "type": "limited"} for i in range(5)]}
    cfg = CoordinatorConfig(role_concurrency={"limited": 2})
    async with LocalRuntime({"limited": handler}, coordinator_config=cfg) as rt:
        status = await rt.run(graph, timeout=10)
    assert status.status == State.FINISHED
    assert handler.most == 2


async def test_a_node_whose_role_has_no_live_worker_waits_and_says_so() -> None:
    graph = {"nodes": [{"node_id": "orphan", "type": "ghost"}]}
    cfg = CoordinatorConfig(worker_types=["present", "ghost"])  # a role nobody serves yet
    async with LocalRuntime({"present": CountsConcurrency()}, coordinator_config=cfg) as rt:
        task_id = await rt.submit(graph)
        run = rt.coordinator._tasks[task_id]
        await wait_for(lambda: run.status.nodes["orphan"].note is not None)
        status = await rt.coordinator.get_status(task_id)
    node = status.nodes["orphan"]
    assert (node.status, node.note) == (State.QUEUED, "no live worker for role 'ghost'")
