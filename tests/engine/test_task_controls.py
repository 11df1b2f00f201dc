"""Suspend / resume, retry from the failed nodes, delete, labels and change observers:
the controls the operator drives, through LocalRuntime on both backends."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from engine_support import TIMEOUT, Recorder, wait_event, wait_for

from flowkit import LocalRuntime
from flowkit.errors import FlowKitError, HandlerError, TaskNotFound
from flowkit.states import State, TaskStatus
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Gate(Handler):
    """Holds its batch until released; stops cooperatively when cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.started.set()
        waits = [asyncio.ensure_future(self.release.wait()), asyncio.ensure_future(ctx.cancel_flag.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if ctx.cancel_flag.is_set():
            self.cancelled = True
            raise asyncio.CancelledError()
        return BatchResult(metrics={"gated": 1})


class FailsUntilFixed(Handler):
    """Fails permanently until ``fixed`` is set (a bug fixed between runs)."""

    def __init__(self) -> None:
        self.fixed = False
        self.calls = 0

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.calls += 1
        if not self.fixed:
            raise HandlerError("bad_input", "not fixed yet", permanent=True)
        return BatchResult(metrics={"ok": 1})


async def status_when(rt: Any, task_id: str, holds: Callable[[TaskStatus], bool]) -> TaskStatus:
    """The task's status once ``holds`` is true of it; fails the test at the deadline."""
    deadline = time.monotonic() + TIMEOUT
    for _ in itertools.count():
        status: TaskStatus = await rt.coordinator.get_status(task_id)
        if holds(status):
            return status
        assert time.monotonic() < deadline, f"task {task_id} never got there: {status.summary()}"
        await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


def gated_chain() -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "first", "type": "gate"},
            {"node_id": "second", "type": "recorder", "depends_on": ["first"]},
            {"node_id": "third", "type": "recorder", "depends_on": ["second"]},
        ]
    }


async def test_suspend_lets_running_nodes_finish_and_starts_no_new_one_until_resumed() -> None:
    gate, recorder = Gate(), Recorder()
    async with LocalRuntime({"gate": gate, "recorder": recorder}) as rt:
        task_id = await rt.submit(gated_chain())
        await wait_event(gate.started)
        await rt.coordinator.suspend_task(task_id)
        assert (await rt.coordinator.get_status(task_id)).suspended
        gate.release.set()
        status = await status_when(rt, task_id, lambda s: s.nodes["first"].status == State.FINISHED)
        # `second` became ready as `first` finished: held, not dispatched.
        assert status.nodes["second"].status == State.QUEUED
        assert status.nodes["second"].attempts == 0
        assert status.status == State.RUNNING and status.suspended
        await rt.coordinator.resume_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT * 2)
    assert status.status == State.FINISHED
    assert not status.suspended
    assert len(recorder.batches["second"]) == 1
    assert len(recorder.batches["third"]) == 1


async def test_a_task_suspended_before_anything_ran_starts_nothing_and_cancels_at_once() -> None:
    gate = Gate()
    async with LocalRuntime({"gate": gate, "recorder": Recorder()}) as rt:
        task_id = await rt.submit(gated_chain())
        await wait_event(gate.started)
        await rt.coordinator.suspend_task(task_id)
        await rt.coordinator.cancel_task(task_id)
        gate.release.set()
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)
    assert status.status == State.CANCELLED
    assert status.nodes["second"].attempts == 0


def failing_graph() -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "extract", "type": "recorder"},
            {"node_id": "side", "type": "recorder"},
            {"node_id": "load", "type": "fragile", "depends_on": ["extract"], "retry_policy": {"max": 2}},
            {"node_id": "report", "type": "recorder", "depends_on": ["load", "side"]},
        ]
    }


async def test_retry_reruns_only_the_failed_nodes_with_a_fresh_retry_budget() -> None:
    fragile, recorder = FailsUntilFixed(), Recorder()
    async with LocalRuntime({"fragile": fragile, "recorder": recorder}) as rt:
        task_id = await rt.submit(failing_graph())
        failed = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)
        assert failed.status == State.FAILED
        assert failed.nodes["load"].error is not None and failed.nodes["load"].error.code == "bad_input"
        assert failed.nodes["report"].status == State.FAILED  # upstream_failed
        fragile.fixed = True
        again = await rt.coordinator.retry_task(task_id)
        assert again == ["load", "report"]
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT * 2)
    assert status.status == State.FINISHED
    assert status.error is None
    assert status.nodes["load"].attempts == 2  # attempt numbers go on: 1 failed, 2 ran
    assert fragile.calls == 2
    # Finished nodes kept their results and did not run again.
    assert len(recorder.batches["extract"]) == 1
    assert len(recorder.batches["side"]) == 1
    assert len(recorder.batches["report"]) == 1


async def test_retry_is_refused_for_a_task_that_did_not_fail() -> None:
    gate = Gate()
    async with LocalRuntime({"gate": gate, "recorder": Recorder()}) as rt:
        task_id = await rt.submit(gated_chain())
        await wait_event(gate.started)
        with pytest.raises(FlowKitError, match="is running: only a failed or cancelled task can be retried"):
            await rt.coordinator.retry_task(task_id)
        gate.release.set()
        assert (await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)).status == State.FINISHED
        with pytest.raises(FlowKitError, match="is finished"):
            await rt.coordinator.retry_task(task_id)


async def test_delete_cancels_a_running_task_then_removes_it() -> None:
    gate = Gate()
    async with LocalRuntime({"gate": gate, "recorder": Recorder()}) as rt:
        task_id = await rt.submit(gated_chain())
        await wait_event(gate.started)
        assert await rt.coordinator.delete_task(task_id, cancel_timeout=TIMEOUT)
        assert gate.cancelled  # stopped before the delete, not after
        with pytest.raises(TaskNotFound):
            await rt.coordinator.get_status(task_id)
        assert not await rt.coordinator.delete_task(task_id)


async def test_labels_are_kept_and_observers_hear_every_change() -> None:
    heard: list[str] = []
    async with LocalRuntime({"recorder": Recorder()}) as rt:
        stop = rt.coordinator.on_change(heard.append)
        graph = {"nodes": [{"node_id": "only", "type": "recorder"}]}
        task_id = await rt.coordinator.create_task(
            graph=graph, task_id="t-labels", labels={"flowkit.io/flowtask": "ns/etl"}
        )
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)
        await wait_for(lambda: heard.count(task_id) >= 2)
        stop()
        count = len(heard)
        await rt.coordinator.create_task(graph=graph, task_id="t-after")
        await rt.coordinator.wait_task("t-after", timeout=TIMEOUT)
        listed = await rt.coordinator.store.get_task(task_id)
    assert status.status == State.FINISHED
    assert listed is not None and listed.labels == {"flowkit.io/flowtask": "ns/etl"}
    assert len(heard) == count  # stopped observers hear nothing more


async def test_a_task_created_suspended_starts_nothing_until_resumed() -> None:
    recorder = Recorder()
    async with LocalRuntime({"gate": Gate(), "recorder": recorder}) as rt:
        graph = {"nodes": [{"node_id": "only", "type": "recorder"}]}
        task_id = await rt.coordinator.create_task(graph=graph, suspended=True)
        status = await rt.coordinator.get_status(task_id)
        assert status.suspended and status.nodes["only"].attempts == 0
        assert rt.coordinator.broken_loop() is None
        await rt.coordinator.resume_task(task_id)
        status = await rt.coordinator.wait_task(task_id, timeout=TIMEOUT)
    assert status.status == State.FINISHED and len(recorder.batches["only"]) == 1


class CountingGate(Gate):
    def __init__(self) -> None:
        super().__init__()
        self.runs: list[str] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.runs.append(ctx.node_id)
        return await super().process_batch(batch, ctx)


async def test_a_node_cancelled_while_its_command_waits_for_a_slot_never_runs() -> None:
    gate = CountingGate()
    graph = {"nodes": [{"node_id": "first", "type": "gate"}, {"node_id": "second", "type": "gate"}]}
    async with LocalRuntime({"gate": gate}, concurrency=1) as rt:  # one slot: one waits
        task_id = await rt.submit(graph)
        await wait_event(gate.started)
        queued = await status_when(
            rt, task_id, lambda s: {n.status for n in s.nodes.values()} == {State.RUNNING, State.QUEUED}
        )
        await rt.coordinator.cancel_task(task_id)
        status = await status_when(rt, task_id, lambda s: s.status.terminal)
    assert status.status == State.CANCELLED, status.summary()
    assert {n.status for n in status.nodes.values()} == {State.CANCELLED}
    assert len(gate.runs) == 1, f"the queued node ran after its cancel: {gate.runs}"
    assert queued.nodes[gate.runs[0]].status == State.RUNNING
