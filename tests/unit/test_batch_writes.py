"""BatchWrites: a run's artifacts, batch records and checkpoint, stored behind the handler
in groups, in the order that keeps an interrupted attempt exact."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from flowkit.states import NodeStatus, TaskStatus
from flowkit.store.base import CountedBatch
from flowkit.store.memory import MemoryStore
from flowkit.worker.batch_writes import BatchWrites

pytestmark = pytest.mark.unit


class LoggedStore(MemoryStore):
    """The in-memory store, logging each write; a write waits while ``hold`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()
        self.fail = False

    async def _enter(self, what: str, arg: Any) -> None:
        self.entered.set()
        await self.hold.wait()
        if self.fail:
            raise ConnectionError("the store is away")
        self.log.append((what, arg))

    async def put_artifacts(
        self, task_id: str, node_id: str, items: Sequence[tuple[str, dict[str, Any]]], *, new: bool
    ) -> None:
        await self._enter("artifacts", [uid for uid, _ in items])
        await super().put_artifacts(task_id, node_id, items, new=new)

    async def record_batches(self, batches: Sequence[CountedBatch]) -> list[bool]:
        await self._enter("records", [b.batch_uid for b in batches])
        return await super().record_batches(batches)

    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None:
        await self._enter("checkpoint", data)
        await super().save_checkpoint(task_id, node_id, data)


@pytest.fixture
async def store() -> LoggedStore:
    store = LoggedStore()
    await store.create_task(TaskStatus(task_id="t", nodes={"n": NodeStatus(node_id="n", type="x")}), {})
    return store


def writes_for(store: LoggedStore, counted: list[tuple[str, bool]], **kwargs: Any) -> BatchWrites:
    async def on_counted(records: list[tuple[CountedBatch, bool]]) -> None:
        counted.extend((batch.batch_uid, first) for batch, first in records)

    return BatchWrites(store, "t", "n", new_stream=True, on_counted=on_counted, **kwargs)


async def batch(writes: BatchWrites, uid: str, checkpoint: bool = False) -> None:
    """What a handler's process_batch and the run do for one batch."""
    writes.put_artifact(uid, {"uid": uid})
    if checkpoint:
        writes.save_checkpoint({"last": uid})
    await writes.record(CountedBatch("t", "n", uid, {"rows": 1.0}))


async def test_what_comes_during_a_write_goes_in_the_next_in_artifacts_records_checkpoint_order(
    store: LoggedStore,
) -> None:
    counted: list[tuple[str, bool]] = []
    writes = writes_for(store, counted)
    store.hold.clear()
    await batch(writes, "b0", checkpoint=True)
    await store.entered.wait()  # b0's write is under way, held
    for uid in ("b1", "b2"):
        await batch(writes, uid, checkpoint=True)
    assert store.log == []  # the handler went on: nothing awaited the store
    store.hold.set()
    await writes.drain()
    assert store.log == [
        ("artifacts", ["b0"]),
        ("records", ["b0"]),
        ("checkpoint", {"last": "b0"}),
        ("artifacts", ["b1", "b2"]),
        ("records", ["b1", "b2"]),
        ("checkpoint", {"last": "b2"}),
    ]
    assert counted == [("b0", True), ("b1", True), ("b2", True)]
    assert [a.batch_uid for a in await store.list_artifacts("t", "n")] == ["b0", "b1", "b2"]


async def test_a_checkpoint_is_not_stored_before_the_record_of_its_batch(store: LoggedStore) -> None:
    writes = writes_for(store, [])
    store.hold.clear()
    writes.put_artifact("b0", {})
    writes.save_checkpoint({"last": "b0"})  # saved inside the batch: its record comes after
    await store.entered.wait()  # a flush is under way before the record
    await writes.record(CountedBatch("t", "n", "b0", {}))
    store.hold.set()
    await writes.drain()
    assert [what for what, _ in store.log] == ["artifacts", "records", "checkpoint"]


async def test_the_handler_waits_when_limit_batches_are_not_stored_yet(store: LoggedStore) -> None:
    writes = writes_for(store, [], limit=3)
    store.hold.clear()
    await batch(writes, "b0")
    await batch(writes, "b1")
    third = asyncio.create_task(batch(writes, "b2"))
    _, waiting = await asyncio.wait({third}, timeout=0.05)
    assert third in waiting  # three not stored: the third waits for the store
    store.hold.set()
    await asyncio.wait_for(third, 5)
    await writes.drain()
    assert sorted(await store.batch_records("t", "n")) == ["b0", "b1", "b2"]


async def test_a_batch_written_again_keeps_its_place_and_counts_once(store: LoggedStore) -> None:
    counted: list[tuple[str, bool]] = []
    writes = writes_for(store, counted)
    await batch(writes, "b0")
    await writes.drain()
    await batch(writes, "b0")
    await writes.drain()
    assert counted == [("b0", True), ("b0", False)]
    assert [a.batch_uid for a in await store.list_artifacts("t", "n")] == ["b0"]


async def test_a_failed_write_fails_the_next_batch_and_the_end(store: LoggedStore) -> None:
    writes = writes_for(store, [])
    store.fail = True
    await batch(writes, "b0")
    with pytest.raises(ConnectionError):
        await writes.drain()
    with pytest.raises(ConnectionError):
        await batch(writes, "b1")
    assert await store.batch_records("t", "n") == {}


async def test_records_no_write_took_yet_are_handed_back_for_the_runs_end(store: LoggedStore) -> None:
    counted: list[tuple[str, bool]] = []
    writes = writes_for(store, counted)
    store.hold.clear()
    await batch(writes, "b0")
    await store.entered.wait()  # b0 is being written
    await batch(writes, "b1")
    await batch(writes, "b2")
    taken = writes.take_records()
    store.hold.set()
    await writes.drain()
    assert [b.batch_uid for b in taken] == ["b1", "b2"]
    assert store.log == [("artifacts", ["b0"]), ("records", ["b0"]), ("artifacts", ["b1", "b2"])]
    assert counted == [("b0", True)], "the taken ones are counted by whoever stores them"

    writes.put_back(taken)  # the end will not carry them after all: written as the others
    await writes.drain()
    assert store.log[-1] == ("records", ["b1", "b2"])
    assert sorted(await store.batch_records("t", "n")) == ["b0", "b1", "b2"]


async def test_records_before_a_waiting_checkpoint_are_not_handed_back(store: LoggedStore) -> None:
    writes = writes_for(store, [])
    store.hold.clear()
    await batch(writes, "b0")
    await store.entered.wait()
    await batch(writes, "b1", checkpoint=True)
    assert writes.take_records() == [], "the checkpoint may be stored only after b1's record"
    store.hold.set()
    await writes.drain()
    assert [what for what, _ in store.log] == ["artifacts", "records", "artifacts", "records", "checkpoint"]
