"""The Store contract, continued: task ownership (fencing tokens per task, liveness per
coordinator), runs and worker states, for MemoryStore and MongoStore (pymongo's async
client and motor)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from flowkit.errors import LeaseLost, NodeNotFound, TaskNotFound
from flowkit.states import NodeError, State
from flowkit.store.base import CountedBatch, Fence, RunClaim, RunEnd, RunRecord, Store

from .test_store_contract import GRAPH, ODD, new_status, record_task_calls, stored_task


async def tasks_created(store: Store, *task_ids: str) -> None:
    for task_id in task_ids:
        assert await store.create_task(new_status(task_id), GRAPH)


# -- ownership ---------------------------------------------------------------------


async def test_a_task_created_with_an_owner_is_held_with_fence_one(store: Store) -> None:
    started = time.time()
    assert await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    task = await store.get_task("t1")
    assert task is not None and task.owner == "c1"

    await store.update_task("t1", {"status": State.RUNNING}, fence=Fence("c1", 1))
    with pytest.raises(LeaseLost):
        await store.update_task("t1", {"status": State.FAILED}, fence=Fence("c1", 0))
    assert await store.claim_task("t1", "c2", 60, now=started + 59) is None, "the lease runs 60 s"
    assert await store.claimable_tasks(now=started + 59) == []
    assert await store.claim_task("t1", "c2", 60, now=time.time() + 61) == Fence("c2", 2)


async def test_a_task_created_without_an_owner_is_claimable_at_once(store: Store) -> None:
    await tasks_created(store, "t1")
    task = await store.get_task("t1")
    assert task is not None and task.owner is None
    assert await store.claimable_tasks(now=0.0) == ["t1"]
    assert await store.claim_task("t1", "c1", 10, now=0.0) == Fence("c1", 1)
    task = await store.get_task("t1")
    assert task is not None and task.owner == "c1"


async def test_racing_claims_have_exactly_one_winner(store: Store, peer: Store) -> None:
    task_ids = [f"t{i}" for i in range(6)]
    await tasks_created(store, *task_ids)
    for now, token in [(100.0, 1), (200.0, 2)]:  # unowned, then with the winner's lease run out
        for task_id in task_ids:
            fences = await asyncio.gather(
                *(s.claim_task(task_id, f"c{i}", 10, now=now) for i, s in enumerate([store, peer] * 3))
            )
            won = [f for f in fences if f is not None]
            assert len(won) == 1 and won[0].token == token, f"{task_id}: {fences}"
            task = await peer.get_task(task_id)
            assert task is not None and task.owner == won[0].owner


async def test_a_fenced_write_after_another_claim_is_refused_and_writes_nothing(
    store: Store, peer: Store
) -> None:
    await tasks_created(store, "t1")
    old = await store.claim_task("t1", "c1", 10, now=100.0)
    new = await peer.claim_task("t1", "c2", 10, now=200.0)  # c1's lease ran out at 110
    assert (old, new) == (Fence("c1", 1), Fence("c2", 2))
    before = await store.get_task("t1")

    stale_writes = [
        store.update_task("t1", {"status": State.FAILED}, fence=old),
        store.update_task("t1", {}, fence=old),
        store.update_node("t1", ODD, {"attempts": 9}, fence=old),
        store.write_task("t1", {"status": State.FAILED}, {ODD: {"attempts": 9}}, fence=old),
        store.write_task("t1", {}, {ODD: {"attempts": 9}, "extract": {"attempts": 9}}, fence=old),  # alike
        store.write_task("t1", {}, {}, fence=Fence("c2", 1)),
        store.write_task("t1", {}, {}, fence=Fence("c1", 2)),
    ]
    for write in stale_writes:
        with pytest.raises(LeaseLost) as caught:
            await write
        assert caught.value.task_id == "t1"
    assert await store.get_task("t1") == before

    await peer.write_task("t1", {"status": State.RUNNING}, {ODD: {"attempts": 1}}, fence=new)
    task = await store.get_task("t1")
    assert task is not None and (task.status, task.nodes[ODD].attempts) == (State.RUNNING, 1)
    await peer.write_task("t1", {}, {ODD: {"attempts": 2}, "extract": {"attempts": 2}}, fence=new)
    task = await store.get_task("t1")
    assert task is not None and (task.nodes[ODD].attempts, task.nodes["extract"].attempts) == (2, 2)


async def test_a_fenced_write_may_name_its_own_owner_and_nothing_else(store: Store, peer: Store) -> None:
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    mine = Fence("c1", 1)
    await store.write_task("t1", {"owner": "c1", "status": State.RUNNING}, {}, fence=mine)
    task = await store.get_task("t1")
    assert task is not None and (task.owner, task.status) == ("c1", State.RUNNING)

    for fields, fence in [({"owner": "c2"}, mine), ({"owner": "c1"}, None), ({"owner": None}, mine)]:
        with pytest.raises(ValueError):
            await store.write_task("t1", {**fields, "status": State.FAILED}, {}, fence=fence)
    assert await peer.claim_task("t1", "c2", 60, now=time.time() + 120) == Fence("c2", 2)
    with pytest.raises(LeaseLost):
        await store.write_task("t1", {"owner": "c1", "status": State.FAILED}, {}, fence=mine)
    task = await store.get_task("t1")
    assert task is not None and (task.owner, task.status) == ("c2", State.RUNNING)


async def test_a_fenced_write_names_a_missing_task_or_node_first(store: Store) -> None:
    await tasks_created(store, "t1")
    await store.claim_task("t1", "c1", 10, now=100.0)
    stale = Fence("c9", 7)
    with pytest.raises(TaskNotFound):
        await store.update_task("missing", {"status": State.RUNNING}, fence=stale)
    with pytest.raises(NodeNotFound) as caught:
        await store.write_task("t1", {"status": State.RUNNING}, {"extract": {}, "ghost": {}}, fence=stale)
    assert caught.value.node_id == "ghost"
    with pytest.raises(NodeNotFound):
        await store.update_node("t1", "ghost", {"attempts": 1}, fence=Fence("c1", 1))
    task = await store.get_task("t1")
    assert task is not None and task.status == State.QUEUED


async def test_a_task_whose_owners_coordinator_document_expired_is_claimable(store: Store) -> None:
    await tasks_created(store, "t1")
    assert await store.claim_task("t1", "c1", 10, now=100.0) == Fence("c1", 1)
    assert await store.claimable_tasks(now=110.0) == [], "c1 is live until 110 inclusive"
    assert await store.claim_task("t1", "c2", 10, now=110.0) is None
    assert await store.claimable_tasks(now=110.5) == ["t1"]
    assert await store.claim_task("t1", "c2", 10, now=110.5) == Fence("c2", 2)
    assert await store.claim_task("t1", "c1", 10, now=115.0) is None, "c2 is live until 120.5"


async def test_a_coordinators_liveness_holds_all_of_its_tasks(store: Store, peer: Store) -> None:
    await tasks_created(store, "t1", "t2", "t3")
    assert await store.claim_task("t1", "c1", 10, now=100.0) == Fence("c1", 1)
    assert await store.claim_task("t2", "c1", 10, now=105.0) == Fence("c1", 1), "c1 live until 115 now"
    assert await peer.claimable_tasks(now=112.0) == ["t3"]
    assert await peer.claim_task("t1", "c2", 10, now=112.0) is None

    assert await store.renew_leases("c1", 10, now=114.0) == {"t1", "t2"}
    assert await peer.claimable_tasks(now=124.0) == ["t3"]
    assert await peer.claimable_tasks(now=124.5) == ["t1", "t2", "t3"]


async def test_renew_leases_writes_no_task_document(store: Store) -> None:
    await tasks_created(store, "t1", "t2")
    await store.claim_task("t1", "c1", 10, now=100.0)
    await store.claim_task("t2", "c1", 10, now=100.0)
    before = [await stored_task(store, t) for t in ("t1", "t2")]
    tasks = record_task_calls(store)

    assert await store.renew_leases("c1", 10, now=200.0) == {"t1", "t2"}

    if tasks is not None:
        assert tasks.calls == ["find"], "one read of the tasks, no write"
    assert [await stored_task(store, t) for t in ("t1", "t2")] == before
    assert await store.claimable_tasks(now=210.0) == [], "held all the same"


async def test_renew_leases_extends_and_returns_the_tasks_still_held(store: Store, peer: Store) -> None:
    await tasks_created(store, "t1", "t2", "t3", "t4", "t5")
    for task_id in ("t1", "t2", "t3", "t4"):
        await store.claim_task(task_id, "c1", 10, now=100.0)
    await peer.claim_task("t3", "c2", 1000, now=150.0)  # taken over after c1's lease ran out
    await store.update_task("t4", {"status": State.FINISHED}, fence=Fence("c1", 1))

    assert await store.renew_leases("c1", 10, now=200.0) == {"t1", "t2"}
    assert await store.claimable_tasks(now=210.0) == ["t5"]
    assert await store.claimable_tasks(now=210.5) == ["t1", "t2", "t5"]
    assert await peer.renew_leases("c2", 10, now=200.0) == {"t3"}
    assert await store.renew_leases("nobody", 10, now=200.0) == set()
    task = await store.get_task("t4")
    assert task is not None and task.owner == "c1", "a terminal task keeps its owner"


async def test_a_task_created_with_an_owner_never_shortens_its_liveness(store: Store) -> None:
    later = time.time() + 1000
    assert await store.renew_leases("c1", 10, now=later) == set()
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    assert await store.claimable_tasks(now=later + 10) == [], "c1 is live until later + 10"
    assert await store.claimable_tasks(now=later + 10.5) == ["t1"]


async def test_a_coordinator_finds_and_takes_again_its_own_orphans(store: Store, peer: Store) -> None:
    await tasks_created(store, "t1", "t2", "t3", "t4")
    first = await store.claim_task("t1", "c1", 100, now=100.0)
    assert first == Fence("c1", 1)
    await peer.claim_task("t2", "c2", 100, now=100.0)
    await store.claim_task("t4", "c1", 100, now=100.0)
    await store.update_task("t4", {"status": State.FINISHED}, fence=Fence("c1", 1))

    assert await store.claimable_tasks(now=150.0) == ["t3"]
    assert await store.claimable_tasks(now=150.0, owner="c1") == ["t1", "t3"]
    assert await peer.claimable_tasks(now=150.0, owner="c2") == ["t2", "t3"]
    assert await store.claimable_tasks(now=150.0, owner="c9") == ["t3"]

    again = await store.claim_task("t1", "c1", 100, now=150.0)  # e.g. the first reply was lost
    assert again == Fence("c1", 2)
    with pytest.raises(LeaseLost):
        await store.update_task("t1", {"status": State.FAILED}, fence=first)
    await store.update_task("t1", {"status": State.RUNNING}, fence=again)
    task = await peer.get_task("t1")
    assert task is not None and (task.owner, task.status) == ("c1", State.RUNNING)
    assert await peer.claim_task("t1", "c2", 100, now=150.0) is None, "c1 is live"


async def test_renewals_and_cancel_requests_lose_none_of_the_owners_writes(store: Store, peer: Store) -> None:
    """On FerretDB every update rewrites the whole document: a second writer of the task
    document racing the owner's writes would erase some of them."""
    await store.create_task(new_status("t1"), GRAPH, owner="c1", lease_sec=60)
    fence = Fence("c1", 1)
    for i in range(1, 11):
        await asyncio.gather(
            store.write_task("t1", {"result": {f"k{i}": i}}, {ODD: {"batches": i}}, fence=fence),
            store.renew_leases("c1", 60, time.time()),
            peer.request_cancel("t1", f"request {i}"),
        )
        task = await peer.get_task("t1")
        assert task is not None, i
        assert (task.result, task.nodes[ODD].batches) == ({f"k{i}": i}, i), f"round {i}: {task}"
        assert task.cancel_requested == f"request {i}"
    assert await store.claimable_tasks(now=time.time()) == []


async def test_release_makes_the_task_claimable_at_once(store: Store, peer: Store) -> None:
    await tasks_created(store, "t1")
    fence = await store.claim_task("t1", "c1", 1000, now=100.0)
    assert fence is not None
    assert await store.claimable_tasks(now=101.0) == []

    await store.release_task(fence, "t1")
    task = await store.get_task("t1")
    assert task is not None and task.owner is None
    assert await store.claimable_tasks(now=101.0) == ["t1"]
    assert await peer.claim_task("t1", "c2", 1000, now=101.0) == Fence("c2", 2)

    await store.release_task(fence, "t1")  # a stale release changes nothing
    task = await store.get_task("t1")
    assert task is not None and task.owner == "c2"
    assert await store.claimable_tasks(now=102.0) == []


async def test_claimable_tasks_skips_terminal_and_held_tasks_oldest_first(store: Store) -> None:
    await tasks_created(store, "t0", "t1", "t2", "t3", "t4", "t5")
    await store.update_task("t1", {"status": State.FINISHED})
    await store.update_task("t2", {"status": State.CANCELLED})
    await store.update_task("t5", {"status": State.FAILED})
    await store.update_task("t4", {"status": State.RUNNING})
    await store.claim_task("t3", "c1", 1000, now=100.0)

    assert await store.claimable_tasks(now=500.0) == ["t0", "t4"]
    assert await store.claimable_tasks(now=500.0, limit=1) == ["t0"]
    assert await store.claimable_tasks(now=1100.5) == ["t0", "t3", "t4"]
    assert await store.claimable_tasks(now=500.0, owner="c1") == ["t0", "t3", "t4"]
    assert await store.claim_task("t1", "c1", 10, now=500.0) is None, "terminal"
    assert await store.claim_task("missing", "c1", 10, now=500.0) is None


# -- runs --------------------------------------------------------------------------


def run(node_id: str, attempt: int, worker_id: str, **fields: Any) -> RunRecord:
    return RunRecord(task_id="t1", node_id=node_id, attempt=attempt, worker_id=worker_id, **fields)


async def test_a_run_is_held_by_its_first_claimer_and_again_by_the_same_worker(store: Store) -> None:
    await tasks_created(store, "t1")
    assert await store.claim_run("t1", ODD, 1, "w1", 30, now=100.0) is True
    assert await store.claim_run("t1", ODD, 1, "w2", 30, now=101.0) is False
    assert await store.claim_run("t1", ODD, 1, "w1", 30, now=105.0) is True, "a redelivered command"
    assert await store.claim_run("t1", ODD, 2, "w2", 30, now=106.0) is True

    assert await store.get_runs("t1") == [
        run(ODD, 1, "w1", lease_until=135.0, accepted_at=100.0),
        run(ODD, 2, "w2", lease_until=136.0, accepted_at=106.0),
    ]


async def test_an_ended_run_is_not_claimed_again(store: Store) -> None:
    await tasks_created(store, "t1")
    assert await store.claim_run("t1", ODD, 1, "w1", 30, now=100.0)
    assert await store.end_run("t1", ODD, 1, "w1", "released", now=101.0)
    assert await store.claim_run("t1", ODD, 1, "w1", 30, now=102.0) is False
    assert await store.claim_run("t1", ODD, 1, "w2", 30, now=102.0) is False


async def test_renew_runs_extends_the_named_attempts_the_worker_still_holds(
    store: Store, peer: Store
) -> None:
    await tasks_created(store, "t1", "t2")
    for task_id, node_id, worker_id in [("t1", ODD, "w1"), ("t2", ODD, "w1"), ("t1", "extract", "w1")]:
        assert await store.claim_run(task_id, node_id, 1, worker_id, 30, now=100.0)
    assert await peer.claim_run("t2", "extract", 1, "w2", 30, now=100.0)
    assert await store.end_run("t1", "extract", 1, "w1", "finished", now=110.0)
    named = [("t1", ODD, 1), ("t1", "extract", 1), ("t2", "extract", 1), ("t2", "missing", 1), ("t9", ODD, 1)]

    assert await store.renew_runs("w1", named, 30, now=200.0) == 1, "ended, another's, unknown: not held"
    assert await store.renew_runs("w1", named, 30, now=200.0) == 1, "renewed to the same instant: still held"
    assert await store.renew_runs("w1", [], 30, now=200.0) == 0
    assert await store.renew_runs("nobody", named, 30, now=200.0) == 0
    leases = {(r.task_id, r.node_id): r.lease_until for t in ("t1", "t2") for r in await store.get_runs(t)}
    assert leases == {
        ("t1", ODD): 230.0,
        ("t1", "extract"): 130.0,
        ("t2", ODD): 130.0,  # w1's, but not named: an earlier process's attempt is left to expire
        ("t2", "extract"): 130.0,
    }


async def test_end_run_records_the_outcome_once_for_the_worker_holding_it(store: Store) -> None:
    await tasks_created(store, "t1")
    await store.claim_run("t1", ODD, 1, "w1", 30, now=100.0)
    error = NodeError(code="boom", message="it broke", permanent=True)

    assert await store.end_run("t1", ODD, 1, "w2", "finished", now=120.0) is False, "not w2's attempt"
    assert await store.end_run("t1", ODD, 2, "w1", "finished", now=120.0) is False, "never claimed"
    assert await store.end_run("t1", ODD, 1, "w1", "failed", metrics={"rows.in": 3.0}, error=error, now=120.0)
    assert await store.end_run("t1", ODD, 1, "w1", "finished", now=130.0) is False, "ended already"
    with pytest.raises(ValueError):
        await store.end_run("t1", ODD, 1, "w1", "running", now=130.0)

    assert await store.get_runs("t1") == [
        run(
            ODD,
            1,
            "w1",
            state="failed",
            lease_until=130.0,
            accepted_at=100.0,
            ended_at=120.0,
            metrics={"rows.in": 3.0},
            error=error,
        )
    ]


async def test_get_runs_sorts_by_node_then_attempt(store: Store) -> None:
    await tasks_created(store, "t1")
    for node_id, attempt in [("b", 2), ("a", 10), ("b", 1), ("a", 2)]:
        await store.claim_run("t1", node_id, attempt, "w1", 30, now=100.0)
    runs = await store.get_runs("t1")
    assert [(r.node_id, r.attempt) for r in runs] == [("a", 2), ("a", 10), ("b", 1), ("b", 2)]


async def test_get_run_reads_one_attempt_by_its_key(store: Store) -> None:
    await tasks_created(store, "t1", "t2")
    for task_id, node_id, attempt, worker_id in [
        ("t1", "a", 1, "w1"),
        ("t1", "a", 2, "w2"),
        ("t2", "a", 2, "w3"),
    ]:
        await store.claim_run(task_id, node_id, attempt, worker_id, 30, now=100.0)
    run = await store.get_run("t1", "a", 2)
    assert run is not None and (run.task_id, run.node_id, run.attempt, run.worker_id) == ("t1", "a", 2, "w2")
    assert run == next(r for r in await store.get_runs("t1") if r.attempt == 2)
    assert await store.get_run("t1", "a", 3) is None
    assert await store.get_run("t1", "b", 1) is None


async def test_claim_runs_answers_each_claim_as_claim_run_would(store: Store) -> None:
    await tasks_created(store, "t1", "t2")
    assert await store.claim_run("t1", ODD, 1, "w2", 30, now=100.0)
    assert await store.claim_run("t1", ODD, 2, "w1", 30, now=100.0)
    claims = [
        RunClaim("t1", ODD, 1, "w1", 30, now=110.0),  # w2's
        RunClaim("t1", ODD, 2, "w1", 30, now=110.0),  # its own again: renewed
        RunClaim("t1", ODD, 3, "w1", 30, now=110.0),  # new
        RunClaim("t2", ODD, 1, "w1", 30, now=110.0),  # new, another task
        RunClaim("t2", ODD, 1, "w3", 30, now=110.0),  # the same attempt, claimed just before
    ]
    assert await store.claim_runs(claims) == [False, True, True, True, False]
    leases = {
        (r.task_id, r.attempt): (r.worker_id, r.lease_until)
        for t in ("t1", "t2")
        for r in await store.get_runs(t)
    }
    assert leases == {
        ("t1", 1): ("w2", 130.0),
        ("t1", 2): ("w1", 140.0),
        ("t1", 3): ("w1", 140.0),
        ("t2", 1): ("w1", 140.0),
    }
    with pytest.raises(TaskNotFound):
        await store.claim_runs(
            [RunClaim("t1", ODD, 4, "w1", 30, now=120.0), RunClaim("t9", ODD, 1, "w1", 30, 120.0)]
        )
    assert await store.get_run("t1", ODD, 4) is None, "nothing claimed when a task is missing"


async def test_end_runs_records_each_outcome_of_an_attempt_the_worker_holds(store: Store) -> None:
    await tasks_created(store, "t1", "t2")
    for task_id, attempt, worker_id in [("t1", 1, "w1"), ("t1", 2, "w2"), ("t2", 1, "w1")]:
        assert await store.claim_run(task_id, ODD, attempt, worker_id, 30, now=100.0)
    error = NodeError(code="boom", message="it broke")
    ends = [
        RunEnd("t1", ODD, 1, "w1", "finished", now=120.0, metrics={"rows": 2.0}),
        RunEnd("t1", ODD, 2, "w1", "finished", now=120.0),  # w2's
        RunEnd("t2", ODD, 1, "w1", "failed", now=120.0, error=error),
        RunEnd("t2", ODD, 7, "w1", "finished", now=120.0),  # never claimed
    ]
    assert await store.end_runs(ends) == [True, False, True, False]
    assert await store.end_runs(ends[:1]) == [True], "the same outcome again: a retry"
    again = RunEnd("t1", ODD, 1, "w1", "finished", now=121.0)
    assert await store.end_runs([again]) == [False], "ended already"
    outcomes = {
        (r.task_id, r.attempt): (r.state, r.metrics, r.error)
        for t in ("t1", "t2")
        for r in await store.get_runs(t)
    }
    assert outcomes == {
        ("t1", 1): ("finished", {"rows": 2.0}, None),
        ("t1", 2): ("running", {}, None),
        ("t2", 1): ("failed", {}, error),
    }
    assert await store.end_runs([]) == []
    with pytest.raises(ValueError):
        RunEnd("t1", ODD, 2, "w2", "running", now=130.0)


async def test_record_batches_counts_each_batch_once(store: Store) -> None:
    await tasks_created(store, "t1", "t2")
    assert await store.record_batch("t1", ODD, "b1", {"rows": 1.0})
    batches = [
        CountedBatch("t1", ODD, "b1", {"rows": 5.0}),  # counted before
        CountedBatch("t1", ODD, "b2", {"rows": 2.0}),
        CountedBatch("t1", ODD, "b2", {"rows": 9.0}),  # twice in one call: the first counts
        CountedBatch("t2", ODD, "b1", {"rows": 3.0}),
    ]
    assert await store.record_batches(batches) == [False, True, False, True]
    assert await store.batch_records("t1", ODD) == {"b1": {"rows": 1.0}, "b2": {"rows": 2.0}}
    assert await store.batch_records("t2", ODD) == {"b1": {"rows": 3.0}}
    with pytest.raises(TaskNotFound):
        await store.record_batches([CountedBatch("t1", ODD, "b3", {}), CountedBatch("t9", ODD, "b1", {})])
    assert "b3" not in await store.batch_records("t1", ODD)


async def test_a_barred_attempt_cannot_be_claimed_and_a_claimed_one_cannot_be_barred(store: Store) -> None:
    await tasks_created(store, "t1")
    assert await store.bar_run("t1", ODD, 1, now=100.0)
    assert await store.bar_run("t1", ODD, 1, now=101.0), "barred already: still barred"
    assert await store.claim_runs([RunClaim("t1", ODD, 1, "w1", 30, 102.0)]) == [False]
    assert await store.claim_run("t1", ODD, 2, "w1", 30, now=102.0)
    assert not await store.bar_run("t1", ODD, 2, now=103.0), "a worker holds it"
    records = {r.attempt: (r.worker_id, r.state, r.ended_at) for r in await store.get_runs("t1")}
    assert records == {1: ("", "cancelled", 100.0), 2: ("w1", "running", None)}
    with pytest.raises(TaskNotFound):
        await store.bar_run("t9", ODD, 1, now=100.0)


async def test_a_runs_end_counts_the_batches_it_carries_only_if_it_is_recorded(store: Store) -> None:
    await tasks_created(store, "t1")
    assert await store.record_batch("t1", ODD, "b1", {"rows": 1.0})
    for attempt in (1, 2):
        assert await store.claim_run("t1", ODD, attempt, "w1", 30, now=100.0)
    carried = (
        CountedBatch("t1", ODD, "b1", {"rows": 7.0}),  # counted before: the first record wins
        CountedBatch("t1", ODD, "b.2", {"r.x": 2.0}),
    )
    lost = RunEnd("t1", ODD, 1, "w2", "finished", now=120.0, batches=(CountedBatch("t1", ODD, "b9", {}),))
    assert await store.end_runs([lost]) == [False]
    assert await store.batch_records("t1", ODD) == {"b1": {"rows": 1.0}}, "not ended, not counted"

    ended = RunEnd("t1", ODD, 1, "w1", "finished", now=120.0, metrics={"n": 1.0}, batches=carried)
    assert await store.end_runs([ended]) == [True]
    again = (CountedBatch("t1", ODD, "b.2", {"r.x": 5.0}),)
    later = RunEnd("t1", ODD, 2, "w1", "finished", now=121.0, batches=again)
    assert await store.end_runs([later]) == [True]
    assert await store.batch_records("t1", ODD) == {"b1": {"rows": 1.0}, "b.2": {"r.x": 2.0}}
    assert (await store.attempt_inputs("t1", ODD)).counted == {"b1", "b.2"}
    assert [r.metrics for r in await store.get_runs("t1")] == [{"n": 1.0}, {}]
    with pytest.raises(ValueError, match="of its own node"):
        RunEnd("t1", ODD, 1, "w1", "finished", now=1.0, batches=(CountedBatch("t1", "other", "b", {}),))


# -- worker states -------------------------------------------------------------------


async def test_set_worker_state_upserts_and_sets_dotted_paths(store: Store) -> None:
    assert await store.get_worker_state("w1") is None
    started = time.time()
    await store.set_worker_state(
        "w1", {"role": "etl", "active_run": {"task_id": "t1", "checkpoint": {"n": 1}}}
    )
    await store.set_worker_state(
        "w1", {"active_run.checkpoint": {"offset.x": 2, "$k": [1, {"a.b": 2}]}, "$odd": 1}
    )
    ended = time.time()

    state = await store.get_worker_state("w1")
    assert state is not None
    updated_at = state.pop("updated_at")
    assert state == {
        "worker_id": "w1",
        "role": "etl",
        "active_run": {"task_id": "t1", "checkpoint": {"offset.x": 2, "$k": [1, {"a.b": 2}]}},
        "$odd": 1,
    }
    assert started <= updated_at <= ended


async def test_list_worker_states_sorts_by_worker_id(store: Store, peer: Store) -> None:
    assert await store.list_worker_states() == []
    await store.set_worker_state("w2", {"role": "b"})
    await peer.set_worker_state("w10", {"role": "c"})
    await store.set_worker_state("w1", {"role": "a"})
    states = await store.list_worker_states()
    assert [(s["worker_id"], s["role"]) for s in states] == [("w1", "a"), ("w10", "c"), ("w2", "b")]


@pytest.mark.parametrize(
    "fields",
    [
        {"role.x": 1, "other": 2},
        {"worker_id": "w2"},
        {"updated_at": 1.0},
        {"_id": "w2"},
        {"a..b": 1},
        {"other": 1, "active": 2, "active.run": 3},
    ],
    ids=["through-a-value", "worker_id", "updated_at", "_id", "empty-segment", "overlapping"],
)
async def test_a_refused_worker_state_update_changes_nothing(store: Store, fields: dict[str, Any]) -> None:
    await store.set_worker_state("w1", {"role": "etl"})
    before = await store.get_worker_state("w1")
    with pytest.raises(ValueError):
        await store.set_worker_state("w1", fields)
    assert await store.get_worker_state("w1") == before


@pytest.mark.integration
async def test_a_claim_cut_short_holds_the_task_only_until_its_lease_ends(mongo_db: Any) -> None:
    """MongoStore's claim tickets: a claimer that died between ticket and task update."""
    from flowkit.store.mongo import CLAIMS, MongoStore

    store = MongoStore(mongo_db)
    await tasks_created(store, "t1")
    dead = {"_id": json.dumps(["t1", 1]), "task_id": "t1", "owner": "gone", "until": 110.0}
    await mongo_db[CLAIMS].insert_one(dead)

    assert await store.claimable_tasks(now=105.0) == ["t1"]
    assert await store.claim_task("t1", "c1", 10, now=105.0) is None
    assert await store.claim_task("t1", "c1", 10, now=110.5) == Fence("c1", 2)
    await store.update_task("t1", {"status": State.RUNNING}, fence=Fence("c1", 2))


@pytest.mark.integration
async def test_a_claim_tried_again_by_its_claimer_goes_on_with_its_ticket(mongo_db: Any) -> None:
    from flowkit.store.mongo import CLAIMS, MongoStore

    store = MongoStore(mongo_db)
    await tasks_created(store, "t1")
    mine = {"_id": json.dumps(["t1", 1]), "task_id": "t1", "owner": "c1", "until": 110.0}
    await mongo_db[CLAIMS].insert_one(mine)

    assert await store.claim_task("t1", "c2", 10, now=105.0) is None
    assert await store.claim_task("t1", "c1", 10, now=105.0) == Fence("c1", 1)


@pytest.mark.integration
async def test_a_cancel_request_of_a_deleted_namesake_is_ignored(mongo_db: Any) -> None:
    """A request that lands after delete_task (the two raced) is not the new task's."""
    from flowkit.store.mongo import CANCELS, MongoStore

    store = MongoStore(mongo_db)
    await tasks_created(store, "t1")
    await store.request_cancel("t1", "for the old one")
    late = await mongo_db[CANCELS].find_one({"_id": "t1"})
    assert await store.delete_task("t1")
    assert await mongo_db[CANCELS].find_one({"_id": "t1"}) is None
    await mongo_db[CANCELS].insert_one(late)

    await tasks_created(store, "t1")
    task = await store.get_task("t1")
    assert task is not None and task.cancel_requested is None
    assert await store.cancel_request("t1") is None
    await store.request_cancel("t1", "for the new one")
    assert await store.cancel_request("t1") == "for the new one"
