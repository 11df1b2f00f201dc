"""How many documents per second the MongoDB-protocol server writes, the way FlowKit does.

    eval "$(scripts/testenv env kafka ferretdb)"
    .venv/bin/python bench/store_ceiling.py [--docs 1000] [--group 5]

A no-op node costs the store three document writes whoever runs it: the worker's claim
(an insert into ``flowkit_runs``), its outcome (an update of that document) and the
coordinator's record of the node (an update of its node document), each sent in groups
(``insert_many``, bulk writes of ``UpdateOne``). So the store's pace at those three writes
bounds a fan-out's nodes per second before FlowKit spends any time of its own. This
times each kind alone, ``--docs`` documents in commands of ``--group`` (about what a
16-slot worker and the coordinator send in the fan-out shape) and of 50 (the most FlowKit
puts in one bulk request), and prints documents per second and the fan-out ceiling they
imply. A benchmark, not a test: ``bench/run.py`` runs it with the services' floor and
reports it beside the fan-out (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any


def run_doc(i: int) -> dict[str, Any]:
    """Shaped like a run record (mongo_workers.py)."""
    return {
        "_id": json.dumps(["task", f"w{i}", 1]),
        **{"task_id": "task", "node_id": f"w{i}", "attempt": 1, "worker_id": "bench-worker"},
        **{"state": "running", "lease_until": 0.0, "accepted_at": 0.0, "ended_at": None},
        **{"metrics": {}, "error": None},
    }


async def timed(docs: int, group: int, command: Callable[[list[int]], Awaitable[Any]]) -> float:
    """Documents per second of ``command`` over ``docs`` documents in groups of ``group``."""
    started = time.perf_counter()
    for first in range(0, docs, group):
        await command(list(range(first, min(first + group, docs))))
    return docs / (time.perf_counter() - started)


async def measure(url: str, docs: int, group: int) -> dict[str, float]:
    from pymongo import AsyncMongoClient, UpdateOne

    database = f"flowkit_ceiling_{uuid.uuid4().hex[:8]}"
    client: Any = AsyncMongoClient(url.rstrip("/") + "/" + database, serverSelectionTimeoutMS=10_000)
    runs, nodes = client[database]["runs"], client[database]["nodes"]
    try:
        await nodes.insert_many([{**run_doc(i), "fence": 1} for i in range(docs)])

        def insert(ids: list[int]) -> Awaitable[Any]:
            return runs.insert_many([run_doc(i) for i in ids], ordered=False)

        def end(ids: list[int]) -> Awaitable[Any]:
            ended = {"$set": {"state": "finished", "ended_at": time.time(), "metrics": {}, "error": None}}
            by_id = [UpdateOne({"_id": run_doc(i)["_id"], "state": "running"}, ended) for i in ids]
            return runs.bulk_write(by_id, ordered=False)

        def record_node(ids: list[int]) -> Awaitable[Any]:
            fields = {"$set": {"status": "finished", "finished_at": time.time(), "batches": 1}}
            return nodes.bulk_write([UpdateOne({"_id": run_doc(i)["_id"], "fence": 1}, fields) for i in ids])

        figures: dict[str, float] = {}
        for size in dict.fromkeys((group, 50)):
            await runs.delete_many({})
            figures[f"claim inserts/s (groups of {size})"] = await timed(docs, size, insert)
            figures[f"run-end updates/s (groups of {size})"] = await timed(docs, size, end)
            figures[f"node updates/s (groups of {size})"] = await timed(docs, size, record_node)
            per_node = sum(1 / figures[k] for k in list(figures)[-3:])
            figures[f"fan-out ceiling, nodes/s (groups of {size})"] = 1 / per_node
        return figures
    finally:
        await client.drop_database(database)
        await client.close()


def store_ceiling(url: str) -> dict[str, float]:
    """:func:`measure` with the defaults in a process of its own (``run.py`` runs it beside
    the services' floor)."""
    return asyncio.run(measure(url, 1000, 5))


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--group", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("FLOWKIT_TEST_MONGO_URL") or os.environ.get("FLOWKIT_MONGO_URL")
    if not url:
        raise SystemExit('no MongoDB URL: run `eval "$(scripts/testenv env kafka ferretdb)"` first')
    for name, value in asyncio.run(measure(url, args.docs, args.group)).items():
        print(f"{name:45s} {value:10,.0f}")


if __name__ == "__main__":
    main()
