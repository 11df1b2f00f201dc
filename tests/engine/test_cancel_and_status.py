"""Coordinator API through LocalRuntime: get_status, cancel_task, role checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_support import TIMEOUT, Recorder, wait_event, wait_for

from flowkit import GraphError, LocalRuntime, WorkerConfig
from flowkit.states import State
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Cooperative(Handler):
    """Blocks in its batch until cancelled, then stops as the seed docs show."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancel_reason: str | None = None
        self.cleaned_up = False

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.started.set()
        await ctx.cancel_flag.wait()
        self.cancel_reason = ctx.cancel_meta.get("reason", "unknown")
        raise asyncio.CancelledError()

    async def cleanup(self) -> None:
        self.cleaned_up = True


class Stubborn(Handler):
    """Ignores the cancel flag; only an interruption stops it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.interrupted = False

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        return BatchResult()


def chain() -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "busy", "type": "busy"},
            {"node_id": "next", "type": "recorder", "depends_on": ["busy"]},
        ]
    }


async def test_cancel_mid_batch_stops_the_handler_cooperatively() -> None:
    handler, recorder = Cooperative(), Recorder()
    async with LocalRuntime({"busy": handler, "recorder": recorder}) as rt:
        task_id = await rt.submit(chain())
        await wait_event(handler.started)
        await rt.coordinator.cancel_task(task_id, reason="operator asked")
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.CANCELLED
    assert status.nodes["busy"].status == State.CANCELLED
    assert status.nodes["next"].status == State.CANCELLED
    assert handler.cancel_reason == "operator asked"
    assert handler.cleaned_up
    assert recorder.batches == {}


async def test_cancel_marks_task_cancelling_until_running_nodes_stop() -> None:
    handler = Stubborn()
    cfg = WorkerConfig(cancel_grace_sec=0.2)
    async with LocalRuntime({"busy": handler, "recorder": Recorder()}, worker_config=cfg) as rt:
        task_id = await rt.submit(chain())
        await wait_event(handler.started)
        await rt.coordinator.cancel_task(task_id)
        status = await rt.coordinator.get_status(task_id)
        assert status.status == State.CANCELLING
        assert status.nodes["busy"].status == State.CANCELLING
        assert status.nodes["next"].status == State.CANCELLED
        await rt.coordinator.wait_task(task_id, timeout=5)


async def test_handler_ignoring_cancel_is_interrupted_after_grace() -> None:
    handler = Stubborn()
    cfg = WorkerConfig(cancel_grace_sec=0.05)
    async with LocalRuntime({"busy": handler, "recorder": Recorder()}, worker_config=cfg) as rt:
        task_id = await rt.submit(chain())
        await wait_event(handler.started)
        await rt.coordinator.cancel_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert handler.interrupted
    assert status.status == State.CANCELLED
    assert status.nodes["busy"].status == State.CANCELLED


async def test_cancel_right_after_create_cancels_a_coordinator_function() -> None:
    graph = {
        "nodes": [
            {"node_id": "agg", "type": "coordinator_fn", "io": {"fn": "metrics.aggregate"}},
            {"node_id": "next", "type": "recorder", "depends_on": ["agg"]},
        ]
    }
    async with LocalRuntime({"recorder": Recorder()}) as rt:
        task_id = await rt.submit(graph)
        await rt.coordinator.cancel_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.CANCELLED
    assert {n.status for n in status.nodes.values()} == {State.CANCELLED}


async def test_cancel_of_a_deferred_node_ends_the_task_at_once() -> None:
    class AlwaysDown(Handler):
        async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
            raise ConnectionError("down")

    graph = {"nodes": [{"node_id": "n", "type": "down", "retry_policy": {"max": 3, "backoff_sec": 60}}]}
    async with LocalRuntime({"down": AlwaysDown()}) as rt:
        task_id = await rt.submit(graph)
        await wait_for(lambda: rt.coordinator._tasks[task_id].status.nodes["n"].status == State.DEFERRED)
        status = await rt.coordinator.get_status(task_id)
        assert status.nodes["n"].retry_at is not None
        await rt.coordinator.cancel_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.CANCELLED
    assert status.nodes["n"].attempts == 1


async def test_get_status_reports_per_node_states() -> None:
    handler = Cooperative()
    graph = {
        "nodes": [
            {"node_id": "done", "type": "recorder"},
            {"node_id": "busy", "type": "busy"},
            {"node_id": "waiting", "type": "recorder", "depends_on": ["busy"]},
        ]
    }
    async with LocalRuntime({"busy": handler, "recorder": Recorder()}) as rt:
        task_id = await rt.submit(graph)
        await wait_event(handler.started)
        # The handler may start before its worker's ACCEPTED reaches the coordinator.
        nodes = rt.coordinator._tasks[task_id].status.nodes
        expected = (State.FINISHED, State.RUNNING)
        await wait_for(lambda: (nodes["done"].status, nodes["busy"].status) == expected)
        status = await rt.coordinator.get_status(task_id)
        assert status.status == State.RUNNING
        assert {k: n.status for k, n in status.nodes.items()} == {
            "done": State.FINISHED,
            "busy": State.RUNNING,
            "waiting": State.QUEUED,
        }
        assert status.nodes["busy"].attempts == 1
        assert status.nodes["waiting"].attempts == 0
        await rt.coordinator.cancel_task(task_id)
        await rt.coordinator.wait_task(task_id, timeout=5)


async def test_unknown_role_is_rejected_at_create_task() -> None:
    graph = {"nodes": [{"node_id": "n", "type": "loader"}]}
    async with LocalRuntime({"processor": Recorder()}) as rt:
        with pytest.raises(GraphError) as info:
            await rt.submit(graph)
    assert (info.value.node_id, info.value.field, info.value.code) == ("n", "type", "unknown_role")
    assert "loader" in str(info.value)


async def test_invalid_graph_is_rejected_before_anything_runs() -> None:
    recorder = Recorder()
    graph = {
        "nodes": [
            {"node_id": "a", "type": "processor"},
            {"node_id": "b", "type": "processor", "depends_on": ["b"]},
        ]
    }
    async with LocalRuntime({"processor": recorder}) as rt:
        with pytest.raises(GraphError):
            await rt.submit(graph)
        assert await rt.store.list_tasks() == []
    assert recorder.batches == {}


async def test_cancel_skips_a_node_still_waiting_for_a_worker_slot() -> None:
    handler = Cooperative()
    recorder = Recorder()
    graph = {
        "nodes": [
            {"node_id": "first", "type": "busy"},
            {"node_id": "second", "type": "busy"},
            {"node_id": "side", "type": "recorder"},
        ]
    }
    async with LocalRuntime({"busy": handler, "recorder": recorder}, concurrency=1) as rt:
        task_id = await rt.submit(graph)
        await wait_event(handler.started)
        handler.started.clear()
        await rt.coordinator.cancel_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.CANCELLED
    assert status.nodes["second"].status == State.CANCELLED
    assert not handler.started.is_set()  # the queued node's handler never ran


async def test_cancel_flag_set_in_the_store_reaches_the_handler_without_a_signal() -> None:
    """The store is a second cancellation source (seed: "database flags")."""
    started = asyncio.Event()
    seen_meta: dict[str, Any] = {}

    class WaitsForCancel(Handler):
        async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
            started.set()
            await ctx.cancel_flag.wait()
            seen_meta.update(ctx.cancel_meta)
            raise asyncio.CancelledError

    graph = {
        "nodes": [
            {"node_id": "slow", "type": "slow"},
            {"node_id": "after", "type": "slow", "depends_on": ["slow"]},
        ]
    }
    cfg = WorkerConfig(db_cancel_poll_ms=20)
    async with LocalRuntime({"slow": WaitsForCancel()}, worker_config=cfg) as rt:
        task_id = await rt.submit(graph)
        await wait_event(started)
        async with asyncio.timeout(TIMEOUT):  # the coordinator wrote "running" (it writes behind)
            while await rt.store.node_state(task_id, "slow") != State.RUNNING:
                await rt.store.wait_changed(task_id, rt.store.version(task_id), 0.05)
        # Only the store says so: no signal is published on the bus.
        await rt.store.update_node(task_id, "slow", {"status": State.CANCELLING})
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)
    assert seen_meta["source"] == "db"
    assert status.nodes["slow"].status == State.FAILED
    assert status.nodes["slow"].error is not None and status.nodes["slow"].error.code == "cancelled"
    assert status.nodes["after"].status == State.FAILED
    assert status.status == State.FAILED
