"""Fan-in modes and start_when, end to end through LocalRuntime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engine_support import Recorder, Source, wait_event, wait_for

from flowkit import LocalRuntime
from flowkit.protocol import STATUS_TOPIC, Envelope, Kind
from flowkit.states import State, TaskStatus
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Gate(Handler):
    """Each node waits for its own release; records the order nodes ran in."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.ran: list[str] = []
        self.fail: set[str] = set()

    def gate(self, node_id: str) -> asyncio.Event:
        return self.release.setdefault(node_id, asyncio.Event())

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await self.gate(ctx.node_id).wait()
        self.ran.append(ctx.node_id)
        if ctx.node_id in self.fail:
            raise ValueError("boom")
        return BatchResult()


def diamond(fan_in: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "a", "type": "gate"},
            {"node_id": "b", "type": "gate"},
            {"node_id": "c", "type": "gate"},
            {"node_id": "join", "type": "join", "depends_on": ["a", "b", "c"], "fan_in": fan_in},
        ]
    }


class Join(Handler):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.started = asyncio.Event()
        self.upstream_done_at_start: list[str] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.upstream_done_at_start = list(self.gate.ran)
        self.started.set()
        return BatchResult()


async def test_fan_in_all_starts_after_every_dependency() -> None:
    gate = Gate()
    join = Join(gate)
    async with LocalRuntime({"gate": gate, "join": join}) as rt:
        task_id = await rt.submit(diamond("all"))
        for node_id in ("a", "b", "c"):
            gate.gate(node_id).set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED
    assert sorted(join.upstream_done_at_start) == ["a", "b", "c"]


async def test_fan_in_any_starts_after_the_first_dependency() -> None:
    gate = Gate()
    join = Join(gate)
    async with LocalRuntime({"gate": gate, "join": join}) as rt:
        task_id = await rt.submit(diamond("any"))
        gate.gate("b").set()
        await wait_event(join.started)
        assert join.upstream_done_at_start == ["b"]
        gate.gate("a").set()
        gate.gate("c").set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED
    assert status.nodes["join"].attempts == 1


async def test_fan_in_count_starts_after_n_dependencies() -> None:
    gate = Gate()
    join = Join(gate)
    async with LocalRuntime({"gate": gate, "join": join}) as rt:
        task_id = await rt.submit(diamond("count:2"))
        gate.gate("c").set()
        await wait_event_status(rt, task_id, "c", State.FINISHED)
        assert not join.started.is_set()
        gate.gate("a").set()
        await wait_event(join.started)
        assert sorted(join.upstream_done_at_start) == ["a", "c"]
        gate.gate("b").set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED


async def test_fan_in_any_runs_although_another_dependency_failed() -> None:
    gate = Gate()
    gate.fail.add("a")
    join = Join(gate)
    async with LocalRuntime({"gate": gate, "join": join}) as rt:
        task_id = await rt.submit(diamond("any"))
        gate.gate("a").set()
        await wait_event_status(rt, task_id, "a", State.FAILED)
        gate.gate("b").set()
        gate.gate("c").set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.nodes["join"].status == State.FINISHED
    assert status.status == State.FAILED


async def test_fan_in_all_fails_with_upstream_failed_when_a_dependency_fails() -> None:
    gate = Gate()
    gate.fail.add("a")
    join = Join(gate)
    async with LocalRuntime({"gate": gate, "join": join}) as rt:
        task_id = await rt.submit(diamond("all"))
        for node_id in ("a", "b", "c"):
            gate.gate(node_id).set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FAILED
    assert status.nodes["join"].status == State.FAILED
    assert status.nodes["join"].error is not None
    assert status.nodes["join"].error.code == "upstream_failed"
    assert not join.started.is_set()


async def wait_event_status(rt: LocalRuntime, task_id: str, node_id: str, state: State) -> None:
    async def reached() -> None:
        while (await rt.coordinator.get_status(task_id)).nodes[node_id].status != state:
            await rt.store.wait_changed(task_id, rt.store.version(task_id), 1.0)

    await asyncio.wait_for(reached(), 5)


# --- start_when ------------------------------------------------------------------------


class BlockedSource(Handler):
    """Writes one artifact per batch; the batch after ``block_after`` waits for ``release``.

    With ``block_in_first``, the first batch writes its artifact and then waits.
    """

    def __init__(self, block_in_first: bool = False) -> None:
        self.release = asyncio.Event()
        self.block_in_first = block_in_first

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(3):
            yield Batch(batch_uid=f"b{i}", payload={"i": i})

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        i = batch.payload["i"]
        if i == 1 and not self.block_in_first:
            await self.release.wait()
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"i": i})
        if i == 0 and self.block_in_first:
            await self.release.wait()
        return BatchResult(metrics={"rows": 1})


class Follower(Handler):
    def __init__(self, upstream: BlockedSource) -> None:
        self.upstream = upstream
        self.started = asyncio.Event()
        self.upstream_released_at_start: bool | None = None
        self.seen: list[int] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        if not self.started.is_set():
            self.upstream_released_at_start = self.upstream.release.is_set()
            self.started.set()
        self.seen.append(batch.payload["meta"]["i"])
        return BatchResult(metrics={"seen": 1})


def pipeline(start_when: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "up", "type": "source"},
            {
                "node_id": "down",
                "type": "follower",
                "depends_on": ["up"],
                "io": {
                    "start_when": start_when,
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_nodes": ["up"]},
                    },
                },
            },
        ]
    }


async def test_first_batch_starts_downstream_before_upstream_finishes() -> None:
    source = BlockedSource()
    follower = Follower(source)
    async with LocalRuntime({"source": source, "follower": follower}) as rt:
        task_id = await rt.submit(pipeline("first_batch"))
        await wait_event(follower.started)  # the upstream is still blocked in batch b1
        status = await rt.coordinator.get_status(task_id)
        assert status.nodes["up"].status == State.RUNNING
        assert follower.upstream_released_at_start is False
        source.release.set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED
    assert follower.seen == [0, 1, 2]  # and it read to the end of the upstream stream
    assert status.nodes["down"].metrics == {"seen": 3}


async def test_first_batch_starts_downstream_on_first_partial_artifact() -> None:
    source = BlockedSource(block_in_first=True)
    follower = Follower(source)
    async with LocalRuntime({"source": source, "follower": follower}) as rt:
        task_id = await rt.submit(pipeline("first_batch"))
        await wait_event(follower.started)  # the upstream is still inside batch b0
        assert follower.upstream_released_at_start is False
        assert follower.seen == [0]
        source.release.set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED
    assert follower.seen == [0, 1, 2]


async def test_ready_waits_for_upstream_completion() -> None:
    source = BlockedSource()
    follower = Follower(source)
    async with LocalRuntime({"source": source, "follower": follower}) as rt:
        task_id = await rt.submit(pipeline("ready"))
        await wait_event_status(rt, task_id, "up", State.RUNNING)
        await wait_for_artifacts(rt, task_id, "up", 1)
        assert (await rt.coordinator.get_status(task_id)).nodes["down"].status == State.QUEUED
        assert (await rt.coordinator.get_status(task_id)).nodes["down"].attempts == 0
        source.release.set()
        status = await rt.coordinator.wait_task(task_id, timeout=5)
    assert status.status == State.FINISHED
    assert follower.upstream_released_at_start is True
    assert follower.seen == [0, 1, 2]


async def wait_for_artifacts(rt: LocalRuntime, task_id: str, node_id: str, count: int) -> None:
    async def reached() -> None:
        while len(await rt.store.list_artifacts(task_id, node_id)) < count:
            await rt.store.wait_changed(task_id, rt.store.version(task_id), 1.0)

    await asyncio.wait_for(reached(), 5)


async def test_three_stage_streaming_pipeline_counts_every_batch() -> None:
    recorder = Recorder()
    graph = {
        "nodes": [
            {"node_id": "extract", "type": "source"},
            {
                "node_id": "transform",
                "type": "source_relay",
                "depends_on": ["extract"],
                "io": {
                    "start_when": "first_batch",
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_node": "extract"},
                    },
                },
            },
            {
                "node_id": "load",
                "type": "recorder",
                "depends_on": ["transform"],
                "io": {
                    "start_when": "first_batch",
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts.rechunk:size",
                        "input_args": {"from_nodes": ["transform"], "size": 1, "meta_list_key": "items"},
                    },
                },
            },
        ]
    }
    async with LocalRuntime({"source": Source(count=4), "source_relay": Relay(), "recorder": recorder}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FINISHED
    assert status.nodes["load"].batches == 8
    assert sorted(b.payload["items"][0] for b in recorder.batches["load"]) == list(range(8))


class Relay(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, batch.payload["meta"])
        return BatchResult()


async def test_status_reports_of_a_finished_node_replayed_while_its_task_runs_change_nothing() -> None:
    """A batch report can arrive after its node finished (a producer delivers a send that
    timed out once the broker is back): the node's count is final by then."""
    gate = Gate()
    graph = {
        "nodes": [
            {"node_id": "src", "type": "source"},
            {"node_id": "after", "type": "gate", "depends_on": ["src"]},
        ]
    }
    async with LocalRuntime({"source": Source(count=3), "gate": gate}) as rt:
        task_id = await rt.submit(graph)
        await wait_for(lambda: "after" in gate.release, timeout=30)  # its handler runs
        assert (await rt.coordinator.get_status(task_id)).nodes["src"].status == State.FINISHED
        late = [
            Envelope(
                kind=Kind.BATCH_DONE,
                task_id=task_id,
                node_id="src",
                attempt=1,
                worker_id="late",
                payload={"batch_uid": uid, "metrics": {"rows": 2}},
            )
            for uid in ("b0", "b1", "b2", "b9")
        ]
        for message in late:  # before "after" can finish: one task's status keeps its order
            await rt.coordinator.bus.publish(STATUS_TOPIC, message)
        gate.gate("after").set()
        status = await rt.coordinator.wait_task(task_id, timeout=30)
    assert status.status == State.FINISHED
    assert (status.nodes["src"].batches, status.nodes["src"].metrics) == (3, {"rows": 6})


class PacedSource(Handler):
    """``count`` batches, one every 10 ms (the pace of a real source, not a synchronisation)."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(self.count):
            await asyncio.sleep(0.01)
            yield Batch(batch_uid=f"b{i}", payload=i)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        return BatchResult(metrics={"rows": 1})


async def run_counting_writes(
    handlers: dict[str, Handler], graph: dict[str, Any]
) -> tuple[TaskStatus, TaskStatus | None, list[dict[str, dict[str, Any]]]]:
    """The task's final status, as the coordinator and the store have it, and the node
    fields of every task write the coordinator made."""
    async with LocalRuntime(handlers) as runtime:
        store = runtime.coordinator.store
        writes: list[dict[str, dict[str, Any]]] = []
        write_task = store.write_task

        async def counted(task_id: str, task_fields: Any, node_fields: Any, **kw: Any) -> None:
            writes.append(node_fields)
            await write_task(task_id, task_fields, node_fields, **kw)

        store.write_task = counted  # type: ignore[method-assign]
        status = await runtime.run(graph, timeout=60)
        return status, await store.get_task(status.task_id), writes


async def test_a_chains_nodes_cost_the_coordinator_about_one_write_each() -> None:
    chain = [
        {"node_id": f"n{i}", "type": "noop", **({"depends_on": [f"n{i - 1}"]} if i else {})}
        for i in range(10)
    ]
    status, stored, writes = await run_counting_writes({"noop": PacedSource(1)}, {"nodes": chain})
    assert status.status == State.FINISHED and stored is not None
    assert all(node.status == State.FINISHED and node.started_at for node in stored.nodes.values())
    # Dispatched, started, batch counted, finished: the start and the count wait for the
    # end (the worker's records hold them), and a node's end goes with the next dispatch.
    assert len(writes) <= 14, f"{len(writes)} writes for 10 nodes"


async def test_batch_progress_is_written_now_and_then_and_exactly_at_the_end() -> None:
    graph = {"nodes": [{"node_id": "s", "type": "paced"}]}
    status, stored, writes = await run_counting_writes({"paced": PacedSource(40)}, graph)

    assert status.status == State.FINISHED
    assert stored is not None and (stored.nodes["s"].batches, stored.nodes["s"].metrics) == (
        40,
        {"rows": 40.0},
    )
    # 40 batch reports over ~0.4 s: a write each before, now at most every 0.25 s
    # beside the node's and the task's own state changes.
    assert len(writes) <= 10, f"{len(writes)} writes for 40 batch reports"


async def test_a_fan_outs_nodes_are_written_about_once_each_after_their_dispatch() -> None:
    width = 30
    middle = [f"w{i}" for i in range(width)]
    graph = {
        "nodes": [
            {"node_id": "root", "type": "noop"},
            *({"node_id": m, "type": "noop", "depends_on": ["root"]} for m in middle),
            {"node_id": "sink", "type": "noop", "depends_on": middle},
        ]
    }
    status, stored, writes = await run_counting_writes({"noop": PacedSource(1)}, graph)
    assert status.status == State.FINISHED and stored is not None
    assert all(node.status == State.FINISHED and node.started_at for node in stored.nodes.values())
    # The dispatches go together; each node's start and batch count wait for its end
    # (another node's end does not take them along), and go with it.
    node_writes = sum(len(fields) for fields in writes)
    print(f"NODEWRITES {node_writes}")
    assert node_writes <= 2 * (width + 2) + 4, f"{node_writes} node writes for {width + 2} nodes"
