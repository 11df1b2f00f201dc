"""ArtifactFeed: a streaming reader's view of upstream artifact streams."""

from __future__ import annotations

import asyncio

import pytest

from flowkit.states import NodeStatus, State, TaskStatus
from flowkit.store.memory import MemoryStore
from flowkit.worker.adapters import ArtifactFeed
from flowkit.worker.adapters.feed import READ_AHEAD

pytestmark = pytest.mark.unit

MANY = READ_AHEAD + 100  # more than one read of a stream being written


async def stream_of(count: int, state: State) -> MemoryStore:
    store = MemoryStore()
    nodes = {"up": NodeStatus(node_id="up", type="x")}
    await store.create_task(TaskStatus(task_id="t", nodes=nodes), {})
    await store.put_artifacts("t", "up", [(f"b{i}", {"i": i}) for i in range(count)], new=True)
    await store.update_node("t", "up", {"status": state})
    return store


async def read(store: MemoryStore, until_done: bool) -> list[int]:
    feed = ArtifactFeed(store, "t", 50, asyncio.Event())
    follow = feed.follow(["up"], poll_ms=50, until_done=until_done)
    return [artifact.meta["i"] async for _, artifact in follow]


async def test_without_following_it_reads_everything_written_so_far() -> None:
    store = await stream_of(MANY, State.RUNNING)
    assert await read(store, until_done=False) == list(range(MANY))


async def test_following_it_reads_a_running_stream_to_its_end() -> None:
    store = await stream_of(MANY, State.RUNNING)
    reader = asyncio.create_task(read(store, until_done=True))
    await store.put_artifact("t", "up", "last", {"i": MANY})
    await store.update_node("t", "up", {"status": State.FINISHED})
    assert await asyncio.wait_for(reader, 10) == list(range(MANY + 1))
