"""The Store contract, for MemoryStore and MongoStore (pymongo's async client and motor)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from flowkit.errors import NodeNotFound, TaskNotFound
from flowkit.states import NodeError, NodeStatus, State, TaskStatus
from flowkit.store.base import Fence, Store

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


@pytest.mark.parametrize("size", [3, 130, 1100])
async def test_every_node_of_a_task_of_any_size_is_read_with_its_writes_from_another_store(
    store: Store, peer: Store, size: int
) -> None:
    """The MongoDB store reads a task's nodes by their ids, up to 500 in one query: every
    node, as last written, reaches a store that did not create the task."""
    ids = tuple(f"n.{i}" for i in range(size))
    await store.create_task(new_status("t1", ids), GRAPH)
    await store.create_task(new_status("t2", ids[:2]), GRAPH)
    await store.write_task("t1", {}, {ids[-1]: {"status": State.FINISHED, "batches": 7}})

    task = await peer.get_task("t1")
    assert task is not None and sorted(task.nodes) == sorted(ids)
    assert (task.nodes[ids[-1]].status, task.nodes[ids[-1]].batches) == (State.FINISHED, 7)
    assert all(task.nodes[n] == NodeStatus(node_id=n, type="etl") for n in ids[:-1])


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


async def test_node_states_reads_each_node_as_node_state_would(store: Store, peer: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    await store.create_task(new_status("t2", ("a",)), GRAPH)
    await store.update_node("t1", ODD, {"status": State.RUNNING})
    keys = [("t1", ODD), ("t2", "a"), ("t1", "nope"), ("missing", ODD), ("t1", "extract"), ("t1", ODD)]
    expected = [State.RUNNING, State.QUEUED, None, None, State.QUEUED, State.RUNNING]
    assert await peer.node_states(keys) == expected
    assert await peer.node_states([]) == []

    # Deleted and created again elsewhere: the generation the peer knew is stale.
    assert await store.delete_task("t2")
    await store.create_task(new_status("t2", ("a",)), GRAPH)
    await store.update_node("t2", "a", {"status": State.FINISHED})
    assert await peer.node_states([("t2", "a"), ("t1", ODD)]) == [State.FINISHED, State.RUNNING]


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


async def test_next_artifacts_reads_a_chunk_after_a_cursor_and_sees_completion(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    await store.put_artifacts("t1", ODD, [(f"b{i}", {"i": i}) for i in range(7)], new=True)
    chunk = await store.next_artifacts("t1", ODD, 2, 3)
    assert [(a.seq, a.batch_uid, a.meta, a.status) for a in chunk] == [
        (3, "b2", {"i": 2}, "partial"),
        (4, "b3", {"i": 3}, "partial"),
        (5, "b4", {"i": 4}, "partial"),
    ]
    assert [a.seq for a in await store.next_artifacts("t1", ODD, 5, 10)] == [6, 7]
    assert await store.next_artifacts("t1", ODD, 7, 10) == []
    await store.complete_artifacts("t1", ODD)
    assert {a.status for a in await store.next_artifacts("t1", ODD, 0, 10)} == {"complete"}
    assert {a.status for a in await store.list_artifacts("t1", ODD)} == {"complete"}
    assert await store.next_artifacts("t1", "extract", 0, 10) == []


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


async def test_a_stream_continued_by_another_process_stays_gap_free(store: Store, peer: Store) -> None:
    """Each writer keeps the last seq it gave and writes the shared hint only now and
    then: a writer in another process meets the seqs taken since, never leaves a gap."""
    await store.create_task(new_status("t1"), GRAPH)
    for i in range(5):
        await store.put_artifact("t1", ODD, f"a{i}", {})
    for i in range(3):  # from a hint behind the stream
        await peer.put_artifact("t1", ODD, f"p{i}", {})
    await store.put_artifact("t1", ODD, "a5", {})  # from its own last seq, also behind now
    assert (await peer.put_artifact("t1", ODD, "a2", {"again": 1})).seq == 3, "a batch stored keeps its seq"
    await store.complete_artifacts("t1", ODD)
    await peer.put_artifact("t1", ODD, "p3", {})
    listed = await store.list_artifacts("t1", ODD)
    assert [a.seq for a in listed] == list(range(1, 11))
    assert [a.batch_uid for a in listed] == ["a0", "a1", "a2", "a3", "a4", "p0", "p1", "p2", "a5", "p3"]


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


async def test_put_artifacts_appends_in_order_after_other_writers(store: Store, peer: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    await store.put_artifacts("t1", ODD, [("a0", {"i": 0}), ("a1", {"i": 1})], new=True)
    await peer.put_artifact("t1", ODD, "p0", {})
    await peer.put_artifacts("t1", ODD, [("p1", {}), ("p2", {})], new=True)
    await store.put_artifacts("t1", ODD, [("a2", {}), ("a3", {"k.v": 1})], new=True)  # its seqs were taken
    await store.put_artifacts("t1", ODD, [("a1", {"again": 1}), ("a4", {})], new=False)
    listed = await store.list_artifacts("t1", ODD)
    assert [a.seq for a in listed] == list(range(1, 9))
    assert [a.batch_uid for a in listed] == ["a0", "a1", "p0", "p1", "p2", "a2", "a3", "a4"]
    assert (listed[1].meta, listed[6].meta) == ({"again": 1}, {"k.v": 1})


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.update_task("missing", {"status": State.RUNNING}),
        lambda s: s.update_node("missing", "extract", {"attempts": 1}),
        lambda s: s.put_artifact("missing", "extract", "b1", {}),
        lambda s: s.put_artifacts("missing", "extract", [("b1", {}), ("b2", {})], new=True),
        lambda s: s.complete_artifacts("missing", "extract"),
        lambda s: s.list_artifacts("missing", "extract"),
        lambda s: s.next_artifacts("missing", "extract", 0, 10),
        lambda s: s.record_batch("missing", "extract", "b1", {}),
        lambda s: s.batch_records("missing", "extract"),
        lambda s: s.save_checkpoint("missing", "extract", {}),
        lambda s: s.load_checkpoint("missing", "extract"),
        lambda s: s.wait_changed("missing", 0, 0.01),
        lambda s: s.write_task("missing", {"status": State.RUNNING}, {"extract": {"attempts": 1}}),
        lambda s: s.request_cancel("missing", "user"),
        lambda s: s.claim_run("missing", "extract", 1, "w1", 30.0, 100.0),
        lambda s: s.end_run("missing", "extract", 1, "w1", "finished", now=100.0),
        lambda s: s.get_runs("missing"),
        lambda s: s.get_run("missing", "extract", 1),
    ],
    ids=[
        "update_task",
        "update_node",
        "put_artifact",
        "put_artifacts",
        "complete_artifacts",
        "list_artifacts",
        "next_artifacts",
        "record_batch",
        "batch_records",
        "save_checkpoint",
        "load_checkpoint",
        "wait_changed",
        "write_task",
        "request_cancel",
        "claim_run",
        "end_run",
        "get_runs",
        "get_run",
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


async def test_create_task_is_insert_only_and_keeps_the_existing_task(store: Store) -> None:
    assert await store.create_task(new_status("t1"), GRAPH) is True
    await store.update_node("t1", ODD, {"attempts": 3})
    await store.record_batch("t1", ODD, "b1", {"rows": 1.0})
    await store.put_artifact("t1", ODD, "b1", {"path": "/a"})
    before, version = await store.get_task("t1"), store.version("t1")

    reset = new_status("t1", nodes=("other",)).model_copy(update={"params": {"new": True}})
    assert await store.create_task(reset, {"nodes": []}) is False

    assert await store.get_task("t1") == before
    assert await store.get_graph("t1") == GRAPH
    assert await store.batch_records("t1", ODD) == {"b1": {"rows": 1.0}}
    assert [a.batch_uid for a in await store.list_artifacts("t1", ODD)] == ["b1"]
    assert store.version("t1") == version, "a refused create is no change"


async def test_write_task_sets_task_and_nodes_fields_in_one_update(store: Store) -> None:
    await store.create_task(new_status("t1", nodes=("extract", ODD, "idle")), GRAPH)
    tasks = record_task_calls(store)
    version = store.version("t1")
    await store.write_task(
        "t1",
        {"status": State.RUNNING, "result": {"k.v": 1}},
        {"extract": {"status": State.FINISHED, "batches": 4}, ODD: {"status": State.RUNNING, "note": "go"}},
    )

    if tasks is not None:
        assert tasks.calls == ["update_one"], "one single-document update"
    assert store.version("t1") == version + 1
    task = await store.get_task("t1")
    assert task is not None
    assert (task.status, task.result) == (State.RUNNING, {"k.v": 1})
    assert (task.nodes["extract"].status, task.nodes["extract"].batches) == (State.FINISHED, 4)
    assert (task.nodes[ODD].status, task.nodes[ODD].note, task.nodes[ODD].batches) == (State.RUNNING, "go", 0)
    assert task.nodes["idle"] == NodeStatus(node_id="idle", type="etl")


async def test_write_task_with_an_unknown_node_writes_nothing(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    before = await store.get_task("t1")
    with pytest.raises(NodeNotFound) as caught:
        await store.write_task("t1", {"status": State.RUNNING}, {"extract": {"attempts": 1}, "ghost": {}})
    assert (caught.value.task_id, caught.value.node_id) == ("t1", "ghost")
    assert await store.get_task("t1") == before


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"nodes": {}}, ValueError),
        ({"owner": "c9"}, ValueError),
        ({"fence": 7}, ValueError),
        ({"status": State.RUNNING, "owner": "c9"}, ValueError),
        ({"cancel_requested": "by a write"}, ValueError),
        ({"task_id": "t2"}, AttributeError),
        ({"no_such_field": 1}, AttributeError),
        ({"owner_until": 1.0}, AttributeError),
        ({"suspend_requested": True}, ValueError),
        ({"labels": {"a": "b"}}, ValueError),
    ],
    ids=[
        "nodes",
        "owner",
        "fence",
        "status-and-owner",
        "cancel",
        "task_id",
        "unknown",
        "owner_until",
        "suspend",
        "labels",
    ],
)
async def test_update_task_refuses_nodes_identity_ownership_and_cancels(
    store: Store, fields: dict[str, Any], error: type[Exception]
) -> None:
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    before = await store.get_task("t1")
    with pytest.raises(error):
        await store.update_task("t1", fields)
    with pytest.raises(error):
        await store.write_task("t1", fields, {})
    assert await store.get_task("t1") == before


async def test_update_node_refuses_its_identity(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    with pytest.raises(AttributeError):
        await store.update_node("t1", ODD, {"node_id": "other"})
    with pytest.raises(AttributeError):
        await store.write_task("t1", {"status": State.RUNNING}, {ODD: {"node_id": "other"}})
    task = await store.get_task("t1")
    assert task is not None and task.status == State.QUEUED and task.nodes[ODD].node_id == ODD


async def test_delete_task_removes_the_task_and_everything_recorded_for_it(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    await store.create_task(new_status("t2"), GRAPH)
    for task_id in ("t1", "t2"):
        await store.put_artifact(task_id, ODD, "b1", {})
        await store.put_artifact(task_id, ODD, "b2", {})
        await store.put_artifact(task_id, "not-a-node", "b1", {})
        await store.record_batch(task_id, ODD, "b1", {"rows": 1.0})
        await store.save_checkpoint(task_id, ODD, {"offset": 3})
        await store.claim_run(task_id, ODD, 1, "w1", 30.0, 100.0)
        assert await store.claim_task(task_id, "c1", 10.0, now=100.0) == Fence("c1", 1)
        await store.request_cancel(task_id, f"cancel {task_id}")

    assert await store.delete_task("t1") is True
    assert await store.get_task("t1") is None and await store.get_graph("t1") is None
    for read in (
        store.list_artifacts("t1", ODD),
        store.list_artifacts("t1", "not-a-node"),
        store.batch_records("t1", ODD),
        store.load_checkpoint("t1", ODD),
        store.get_runs("t1"),
    ):
        with pytest.raises(TaskNotFound):
            await read
    assert await store.delete_task("t1") is False

    # The same id again starts from nothing: no old records, artifact seqs from 1.
    assert await store.create_task(new_status("t1"), GRAPH) is True
    assert await store.list_artifacts("t1", ODD) == []
    assert await store.batch_records("t1", ODD) == {}
    assert await store.load_checkpoint("t1", ODD) is None
    assert await store.get_runs("t1") == []
    assert await store.cancel_request("t1") is None
    task = await store.get_task("t1")
    assert task is not None and task.cancel_requested is None
    assert (await store.put_artifact("t1", ODD, "b9", {})).seq == 1
    assert (await store.put_artifact("t1", "not-a-node", "b9", {})).seq == 1
    assert await store.record_batch("t1", ODD, "b1", {"rows": 2.0}) is True
    assert await store.claim_run("t1", ODD, 1, "w2", 30.0, 100.0) is True
    assert await store.claim_task("t1", "c2", 10.0, now=100.0) == Fence("c2", 1)

    # The other task keeps everything.
    assert [a.seq for a in await store.list_artifacts("t2", ODD)] == [1, 2]
    assert await store.batch_records("t2", ODD) == {"b1": {"rows": 1.0}}
    assert await store.load_checkpoint("t2", ODD) == {"offset": 3}
    assert [r.worker_id for r in await store.get_runs("t2")] == ["w1"]
    assert await store.cancel_request("t2") == "cancel t2"


async def test_request_cancel_needs_no_fence(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    await store.request_cancel("t1", "cancelled by user")
    task = await store.get_task("t1")
    assert task is not None
    assert (task.cancel_requested, task.owner, task.status) == ("cancelled by user", "c1", State.QUEUED)


async def test_request_cancel_leaves_the_task_document_unchanged(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    await store.update_task("t1", {"status": State.RUNNING}, fence=Fence("c1", 1))
    before = await stored_task(store, "t1")
    tasks = record_task_calls(store)

    await store.request_cancel("t1", "cancelled by user")

    if tasks is not None:
        assert set(tasks.calls) <= {"find_one"}, f"the task document is only read: {tasks.calls}"
    assert await stored_task(store, "t1") == before
    await store.write_task("t1", {"status": State.CANCELLING}, {}, fence=Fence("c1", 1))
    task = await store.get_task("t1")
    assert task is not None
    assert (task.status, task.cancel_requested) == (State.CANCELLING, "cancelled by user")
    listed = await store.list_tasks()
    assert [(t.task_id, t.status, t.cancel_requested) for t in listed] == [("t1", State.CANCELLING, None)]


async def test_cancel_request_round_trips(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    assert await store.cancel_request("t1") is None
    assert await store.cancel_request("missing") is None

    await store.request_cancel("t1", "first")
    assert await store.cancel_request("t1") == "first"
    await store.request_cancel("t1", "second")
    assert await store.cancel_request("t1") == "second"
    task = await store.get_task("t1")
    assert task is not None and task.cancel_requested == "second"

    asked = new_status("t2").model_copy(update={"cancel_requested": "at creation"})
    assert await store.create_task(asked, GRAPH)
    assert await store.get_task("t2") == asked
    assert await store.cancel_request("t2") == "at creation"
    assert not await store.create_task(new_status("t1").model_copy(update={"cancel_requested": "no"}), GRAPH)
    assert await store.cancel_request("t1") == "second", "a refused create writes no cancel request"


# -- change notification -------------------------------------------------------------


async def test_the_change_listener_hears_every_write_of_this_store(store: Store) -> None:
    heard: list[str] = []
    store.set_change_listener(heard.append)
    await store.create_task(new_status("t1"), GRAPH)
    await store.create_task(new_status("t2"), GRAPH)
    assert heard == ["t1", "t2"]

    writes = [
        store.create_task(new_status("t1"), GRAPH),  # refused: no write, no call
        store.update_task("t1", {"status": State.RUNNING}),
        store.update_node("t1", ODD, {"attempts": 1}),
        store.write_task("t1", {}, {ODD: {"batches": 1}}),
        store.put_artifact("t1", ODD, "b1", {}),
        store.put_artifact("t1", ODD, "b1", {"again": 1}),
        store.complete_artifacts("t1", ODD),
        store.record_batch("t1", ODD, "b1", {}),
        store.record_batch("t1", ODD, "b1", {}),  # a duplicate: no write, no call
        store.request_cancel("t1", "user"),
    ]
    for write in writes:
        await write
    assert heard == ["t1", "t2"] + ["t1"] * 8

    store.notice("t1")
    assert len(heard) == 10, "notice reports another process's write: no call"
    assert await store.delete_task("t2") is True
    assert await store.delete_task("t2") is False
    assert heard[10:] == ["t2"]

    store.set_change_listener(None)
    await store.update_task("t1", {"status": State.FINISHED})
    assert len(heard) == 11


async def test_a_failing_listener_never_fails_the_write(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(task_id: str) -> None:
        raise RuntimeError(f"feed down for {task_id}")

    store.set_change_listener(broken)
    with caplog.at_level(logging.ERROR, logger="flowkit.store"):
        await store.create_task(new_status("t1"), GRAPH)
        await store.update_task("t1", {"status": State.RUNNING})
    task = await store.get_task("t1")
    assert task is not None and task.status == State.RUNNING
    assert [r.getMessage() for r in caplog.records] == ["task t1: the change listener failed"] * 2
    assert all(r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


async def test_notice_bumps_the_version_and_wakes_a_waiter(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    heard: list[str] = []
    store.set_change_listener(heard.append)
    before = store.version("t1")

    waiter = asyncio.create_task(store.wait_changed("t1", before, timeout=10))
    await asyncio.sleep(0)  # let the waiter start waiting
    store.notice("t1")
    assert await asyncio.wait_for(waiter, 5) == before + 1
    assert store.version("t1") == before + 1
    assert heard == []


class _CallRecorder:
    """Stands in for a collection, recording which of its methods are used."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)


async def stored_task(store: Store, task_id: str) -> Any:
    """The task's record exactly as stored (for checks that a call did not write it)."""
    from flowkit.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        entry = store._tasks[task_id]
        return entry.status.model_dump(), entry.fence, entry.graph
    return await store._tasks.find_one({"_id": task_id})  # type: ignore[attr-defined]


def record_task_calls(store: Store) -> _CallRecorder | None:
    """For MongoStore: record the calls on the tasks collection from now on."""
    from flowkit.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return None
    recorder = _CallRecorder(store._tasks)  # type: ignore[attr-defined]
    store._tasks = recorder  # type: ignore[attr-defined]
    return recorder


async def test_suspend_requests_are_kept_beside_the_task_and_read_with_it(store: Store) -> None:
    status = new_status("t1")
    status.labels = {"flowkit.io/flowtask": "ns/etl"}
    await store.create_task(status, GRAPH, owner="c1", lease_sec=60)
    task = await store.get_task("t1")
    assert task is not None and task.suspend_requested is None and task.labels == status.labels
    await store.request_suspend("t1", True)
    await store.request_cancel("t1", "by user")
    await store.request_suspend("t1", False)
    task = await store.get_task("t1")
    assert task is not None
    assert (task.suspend_requested, task.cancel_requested, task.suspended) == (False, "by user", False)
    with pytest.raises(TaskNotFound):
        await store.request_suspend("nope", True)


async def test_reopen_task_only_reopens_an_ended_unsuccessful_task_and_drops_its_cancel(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    fence = Fence("c1", 1)
    reopen = ({"status": State.RUNNING, "error": None}, {ODD: {"status": State.QUEUED, "attempt_base": 1}})
    await store.update_task("t1", {"status": State.RUNNING}, fence=fence)
    assert not await store.reopen_task("t1", *reopen)  # running: refused, nothing written
    await store.request_cancel("t1", "by user")
    await store.write_task("t1", {"status": State.CANCELLED}, {ODD: {"status": State.CANCELLED}}, fence=fence)
    assert await store.reopen_task("t1", *reopen)
    task = await store.get_task("t1")
    assert task is not None
    assert (task.status, task.owner, task.cancel_requested) == (State.RUNNING, None, None)
    assert (task.nodes[ODD].status, task.nodes[ODD].attempt_base) == (State.QUEUED, 1)
    assert "t1" in await store.claimable_tasks(time.time())
    assert not await store.reopen_task("missing", *reopen)


async def test_observers_hear_writes_and_notices_until_stopped(store: Store) -> None:
    heard: list[str] = []
    stop = store.observe(heard.append)
    await store.create_task(new_status("t1"), GRAPH)
    store.notice("t2")
    stop()
    await store.update_task("t1", {"status": State.RUNNING})
    assert heard == ["t1", "t2"]


async def test_attempt_inputs_are_the_node_state_checkpoint_and_counted_batches(store: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH)
    fresh = await store.attempt_inputs("t1", ODD)
    assert (fresh.state, fresh.checkpoint, fresh.counted) == (State.QUEUED, None, set())
    await store.record_batch("t1", ODD, "b1", {"rows": 1})
    await store.save_checkpoint("t1", ODD, {"page": 3})
    await store.update_node("t1", ODD, {"status": State.RUNNING})
    later = await store.attempt_inputs("t1", ODD)
    assert (later.state, later.checkpoint, later.counted) == (State.RUNNING, {"page": 3}, {"b1"})
    with pytest.raises(TaskNotFound):
        await store.attempt_inputs("nope", ODD)
