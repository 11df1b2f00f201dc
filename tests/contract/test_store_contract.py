"""The Store contract, for MemoryStore and MongoStore (pymongo's async client and motor)."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowkit.errors import NodeNotFound, TaskNotFound
from flowkit.states import NodeError, NodeStatus, State, TaskStatus
from flowkit.store.base import Store

# Node ids and keys MongoDB cannot take as they are: they must round-trip all the same.
ODD = "load.v2"
DOLLAR = "$cost"


def new_status(task_id: str, nodes: tuple[str, ...] = ("extract", ODD)) -> TaskStatus:
    return TaskStatus(
        task_id=task_id,
        params={"day": "2026-11-23", "a.b": 1, DOLLAR: {"x.y": [1, {"$z": 2}]}},
        created_at=1_700_000_000.5,
        nodes={n: NodeStatus(node_id=n, type="etl") for n in nodes},
    )


GRAPH = {"nodes": [{"node_id": "extract", "type": "etl", "io": {"input_args": {"path.glob": "*.csv"}}}]}


async def test_a_task_round_trips_with_its_graph(store: Store) -> None:
    status = new_status("t1")
    await store.create_task(status, GRAPH)

    assert await store.get_task("t1") == status
    assert await store.get_graph("t1") == GRAPH
    assert await store.get_task("missing") is None
    assert await store.get_graph("missing") is None


async def test_update_node_sets_only_the_given_fields_of_that_node(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    error = NodeError(code="boom", message="it broke", permanent=True)
    await store.update_node(
        "t1", ODD, {"status": State.FAILED, "attempts": 2, "error": error, "metrics": {"rows.in": 3.0}}
    )

    task = await store.get_task("t1")
    assert task is not None
    node = task.nodes[ODD]
    expected = (State.FAILED, 2, error, {"rows.in": 3.0})
    assert (node.status, node.attempts, node.error, node.metrics) == expected
    assert node.node_id == ODD and node.type == "etl" and node.batches == 0
    assert task.nodes["extract"] == NodeStatus(node_id="extract", type="etl")
    assert await store.node_state("t1", ODD) == State.FAILED
    assert await store.node_state("t1", "extract") == State.QUEUED
    assert await store.node_state("t1", "nope") is None
    assert await store.node_state("missing", ODD) is None


async def test_update_task_sets_task_fields(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    fields = {"status": State.FINISHED, "result": {"out.path": "/x"}, "finished_at": 5.0}
    await store.update_task("t1", fields)

    task = await store.get_task("t1")
    assert task is not None
    assert (task.status, task.result, task.finished_at) == (State.FINISHED, {"out.path": "/x"}, 5.0)
    assert task.nodes.keys() == {"extract", ODD}


async def test_list_tasks_filters_by_state_and_keeps_the_newest(store: Store) -> None:
    for i in range(5):
        await store.create_task(new_status(f"t{i}"), GRAPH)
    await store.update_task("t1", {"status": State.RUNNING})
    await store.update_task("t3", {"status": State.RUNNING})
    await store.update_task("t4", {"status": State.FAILED})

    assert [t.task_id for t in await store.list_tasks()] == ["t0", "t1", "t2", "t3", "t4"]
    assert [t.task_id for t in await store.list_tasks({State.RUNNING})] == ["t1", "t3"]
    assert [t.task_id for t in await store.list_tasks({State.RUNNING, State.FAILED})] == ["t1", "t3", "t4"]
    assert [t.task_id for t in await store.list_tasks(limit=2)] == ["t3", "t4"]
    assert await store.list_tasks({State.CANCELLED}) == []


async def test_put_artifact_is_idempotent_and_keeps_its_seq(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    first = await store.put_artifact("t1", ODD, "b1", {"path": "/a", "k.v": 1})
    second = await store.put_artifact("t1", ODD, "b2", {"path": "/b"})
    again = await store.put_artifact("t1", ODD, "b1", {"path": "/a2"})
    other_node = await store.put_artifact("t1", "extract", "b1", {})

    assert (first.seq, second.seq, again.seq, other_node.seq) == (1, 2, 1, 1)
    assert first.meta == {"path": "/a", "k.v": 1} and again.meta == {"path": "/a2"}
    listed = await store.list_artifacts("t1", ODD)
    assert [(a.batch_uid, a.seq, a.meta, a.status) for a in listed] == [
        ("b1", 1, {"path": "/a2"}, "partial"),
        ("b2", 2, {"path": "/b"}, "partial"),
    ]
    assert listed[0].ref().model_dump() == {"task_id": "t1", "node_id": ODD, "batch_uid": "b1"}


async def test_list_artifacts_resumes_after_a_cursor_in_write_order(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    for i in range(5):
        await store.put_artifact("t1", "extract", f"b{i}", {"i": i})

    assert [a.meta["i"] for a in await store.list_artifacts("t1", "extract", after=2)] == [2, 3, 4]
    assert await store.list_artifacts("t1", "extract", after=5) == []
    assert await store.list_artifacts("t1", ODD) == []


async def test_concurrent_writers_get_distinct_seqs_without_gaps(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    uids = [f"b{i}" for i in range(12)]
    written = await asyncio.gather(
        *(store.put_artifact("t1", "extract", uid, {}) for uid in uids),
        *(store.put_artifact("t1", "extract", uid, {}) for uid in uids[:4]),
    )
    listed = await store.list_artifacts("t1", "extract")
    assert [a.seq for a in listed] == list(range(1, 13))
    assert sorted(a.batch_uid for a in listed) == sorted(uids)
    seq_of = {a.batch_uid: a.seq for a in listed}
    assert all(a.seq == seq_of[a.batch_uid] for a in written)


async def test_complete_artifacts_marks_only_that_nodes_artifacts(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    await store.put_artifact("t1", ODD, "b1", {})
    await store.put_artifact("t1", ODD, "b2", {})
    await store.put_artifact("t1", "extract", "b1", {})
    await store.complete_artifacts("t1", ODD)

    assert {a.status for a in await store.list_artifacts("t1", ODD)} == {"complete"}
    assert {a.status for a in await store.list_artifacts("t1", "extract")} == {"partial"}


async def test_record_batch_counts_the_first_record_only(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    assert await store.record_batch("t1", ODD, "b1", {"rows": 3.0, "bytes.out": 9.0})
    assert not await store.record_batch("t1", ODD, "b1", {"rows": 99.0})
    racing = (store.record_batch("t1", ODD, "b2", {"rows": float(i)}) for i in range(5))
    results = await asyncio.gather(*racing)
    assert sorted(results) == [False, False, False, False, True]
    assert await store.record_batch("t1", "extract", "b1", {})

    records = await store.batch_records("t1", ODD)
    assert records.keys() == {"b1", "b2"}
    assert records["b1"] == {"rows": 3.0, "bytes.out": 9.0}
    assert await store.batch_records("t1", "nothing-yet") == {}


async def test_checkpoints_save_replace_and_load(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    assert await store.load_checkpoint("t1", ODD) is None
    await store.save_checkpoint("t1", ODD, {"offset": 10, "files": ["a.csv"], "$meta": {"x.y": 1}})
    await store.save_checkpoint("t1", ODD, {"offset": 20})
    assert await store.load_checkpoint("t1", ODD) == {"offset": 20}
    assert await store.load_checkpoint("t1", "extract") is None
    await store.save_checkpoint("t1", "extract", {"$meta": {"x.y": 1}})
    assert await store.load_checkpoint("t1", "extract") == {"$meta": {"x.y": 1}}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.update_task("missing", {"status": State.RUNNING}),
        lambda s: s.update_node("missing", "extract", {"attempts": 1}),
        lambda s: s.put_artifact("missing", "extract", "b1", {}),
        lambda s: s.complete_artifacts("missing", "extract"),
        lambda s: s.list_artifacts("missing", "extract"),
        lambda s: s.record_batch("missing", "extract", "b1", {}),
        lambda s: s.batch_records("missing", "extract"),
        lambda s: s.save_checkpoint("missing", "extract", {}),
        lambda s: s.load_checkpoint("missing", "extract"),
        lambda s: s.wait_changed("missing", 0, 0.01),
    ],
    ids=[
        "update_task",
        "update_node",
        "put_artifact",
        "complete_artifacts",
        "list_artifacts",
        "record_batch",
        "batch_records",
        "save_checkpoint",
        "load_checkpoint",
        "wait_changed",
    ],
)
async def test_an_unknown_task_raises_task_not_found(store: Store, call: object) -> None:
    await store.create_task(new_status("other"), GRAPH)
    with pytest.raises(TaskNotFound) as caught:
        await call(store)  # type: ignore[operator]
    assert caught.value.task_id == "missing"


async def test_an_unknown_node_or_field_is_refused_without_writing(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    with pytest.raises(NodeNotFound, match="has no node 'ghost'"):
        await store.update_node("t1", "ghost", {"attempts": 1})
    with pytest.raises(AttributeError):
        await store.update_node("t1", ODD, {"no_such_field": 1})
    task = await store.get_task("t1")
    assert task is not None and task.nodes.keys() == {"extract", ODD}


async def test_own_writes_bump_the_version_and_wake_a_waiter(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    assert store.version("missing") == 0
    before = store.version("t1")
    started = time.monotonic()
    assert await store.wait_changed("t1", before, timeout=0.05) == before
    assert time.monotonic() - started >= 0.04, "waits up to the timeout when nothing changed"

    waiter = asyncio.create_task(store.wait_changed("t1", before, timeout=10))
    await asyncio.sleep(0)  # let the waiter start waiting
    await store.put_artifact("t1", ODD, "b1", {})
    assert await asyncio.wait_for(waiter, 5) > before
    assert await store.wait_changed("t1", before, timeout=10) == store.version("t1"), "no wait when behind"
