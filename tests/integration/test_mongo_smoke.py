"""Smoke test of the MongoDB-protocol server, through pymongo's async client and motor.

Each test runs once per client: FlowKit creates pymongo AsyncMongoClients itself and
accepts a motor database from users.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError


@pytest.fixture(params=["pymongo", "motor"])
def db(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("mongo_db" if request.param == "pymongo" else "motor_db")


async def to_list(cursor: Any) -> list[dict[str, Any]]:
    if inspect.isawaitable(cursor):  # pymongo's async aggregate() is a coroutine, motor's is not
        cursor = await cursor
    return list(await cursor.to_list(length=None))


async def test_insert_then_find_one(db: Any) -> None:
    result = await db.tasks.insert_one({"_id": "t1", "state": "pending", "nodes": {"a": {"attempts": 0}}})
    assert result.inserted_id == "t1"
    assert await db.tasks.find_one({"_id": "t1"}) == {
        "_id": "t1",
        "state": "pending",
        "nodes": {"a": {"attempts": 0}},
    }


async def test_guarded_find_one_and_update_upserts_then_increments(db: Any) -> None:
    claim = {"$inc": {"attempts": 1}, "$set": {"lease.owner": "w1"}}
    created = await db.leases.find_one_and_update(
        {"_id": "node-a", "attempts": {"$lt": 3}}, claim, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert created == {"_id": "node-a", "attempts": 1, "lease": {"owner": "w1"}}

    again = await db.leases.find_one_and_update(
        {"_id": "node-a", "attempts": 1},
        {"$inc": {"attempts": 1}, "$set": {"lease.owner": "w2"}},
        return_document=ReturnDocument.AFTER,
    )
    assert again == {"_id": "node-a", "attempts": 2, "lease": {"owner": "w2"}}


async def test_guard_that_does_not_match_leaves_the_document_alone(db: Any) -> None:
    await db.leases.insert_one({"_id": "node-b", "state": "done", "attempts": 1})
    missed = await db.leases.find_one_and_update(
        {"_id": "node-b", "state": "running"}, {"$inc": {"attempts": 1}}, return_document=ReturnDocument.AFTER
    )
    assert missed is None
    assert await db.leases.find_one({"_id": "node-b"}) == {"_id": "node-b", "state": "done", "attempts": 1}


async def test_dotted_inc_and_set_reach_into_nested_documents(db: Any) -> None:
    await db.tasks.insert_one({"_id": "t2", "nodes": {"a": {"batches": 1}}})
    await db.tasks.update_one(
        {"_id": "t2"}, {"$inc": {"nodes.a.batches": 2}, "$set": {"nodes.b.state": "ready"}}
    )
    assert await db.tasks.find_one({"_id": "t2"}, {"_id": 0}) == {
        "nodes": {"a": {"batches": 3}, "b": {"state": "ready"}}
    }


async def test_unique_index_refuses_a_duplicate(db: Any) -> None:
    await db.artifacts.create_index([("task", ASCENDING), ("key", ASCENDING)], unique=True)
    await db.artifacts.insert_one({"task": "t1", "key": "out"})
    await db.artifacts.insert_one({"task": "t2", "key": "out"})
    with pytest.raises(DuplicateKeyError):
        await db.artifacts.insert_one({"task": "t1", "key": "out"})
    assert await db.artifacts.count_documents({}) == 2


async def test_sort_and_limit_return_the_top_documents(db: Any) -> None:
    await db.events.insert_many([{"n": n, "even": n % 2 == 0} for n in (4, 9, 1, 7, 3, 8)])
    top = await to_list(db.events.find({}, {"_id": 0, "n": 1}).sort("n", DESCENDING).limit(3))
    assert top == [{"n": 9}, {"n": 8}, {"n": 7}]


async def test_aggregate_matches_and_groups(db: Any) -> None:
    await db.events.insert_many(
        [{"node": node, "rows": rows} for node, rows in [("a", 1), ("a", 2), ("b", 5), ("c", 100)]]
    )
    # One accumulator per $group: FerretDB 1.24 returns 0 for every accumulator after
    # the first and has no $max/$min/$avg (docs/testenv.md).
    pipeline = [
        {"$match": {"node": {"$in": ["a", "b"]}}},
        {"$group": {"_id": "$node", "rows": {"$sum": "$rows"}}},
        {"$sort": {"_id": 1}},
    ]
    assert await to_list(db.events.aggregate(pipeline)) == [{"_id": "a", "rows": 3}, {"_id": "b", "rows": 5}]
