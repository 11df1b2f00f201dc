"""What one task-document write and read cost on the MongoDB-protocol server, by task size.

    eval "$(scripts/testenv env kafka ferretdb)"
    .venv/bin/python bench/doc_size.py [--nodes 1,20,100,500,1000]

FlowKit keeps a task as one document (its graph and every node's state), and the
coordinator writes a node's state with a dotted ``$set`` on it. FerretDB 1.24 (SQLite)
applies an update as a read-modify-write of the whole document, so a write's cost grows
with the task: this prints the p50 of 30 such updates and 10 reads of documents shaped
like FlowKit's (node records and graph entries of the same fields), per size. On MongoDB
itself an update of one field stays cheap. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any


def task_document(task_id: str, nodes: int) -> dict[str, Any]:
    node = {"type": "noop", "status": "queued", "attempts": 0, "batches": 0, "metrics": {},
            "started_at": None, "finished_at": None, "worker_id": None}  # fmt: skip
    return {
        "_id": task_id,
        "owner": "bench",
        "fence": 1,
        "nodes": {f"w{i}": {"node_id": f"w{i}", **node} for i in range(nodes)},
        "graph": {
            "nodes": [{"node_id": f"w{i}", "type": "noop", "depends_on": ["root"]} for i in range(nodes)]
        },
    }


async def measure(url: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000)
    db = client[f"bench_doc_size_{uuid.uuid4().hex[:8]}"]
    rows = []
    try:
        for n in sizes:
            task_id = f"t{n}"
            await db.tasks.insert_one(task_document(task_id, n))
            writes, reads = [], []
            for i in range(30):
                started = time.perf_counter()
                fields = {f"nodes.w{i % n}.status": "running", f"nodes.w{i % n}.started_at": time.time()}
                await db.tasks.update_one({"_id": task_id, "fence": 1}, {"$set": fields})
                writes.append(time.perf_counter() - started)
            for _ in range(10):
                started = time.perf_counter()
                await db.tasks.find_one({"_id": task_id})
                reads.append(time.perf_counter() - started)
            rows.append((n, statistics.median(writes) * 1000, statistics.median(reads) * 1000))
    finally:
        await client.drop_database(db.name)
        await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,20,100,500,1000", help="task sizes, comma-separated")
    args = parser.parse_args()
    try:
        sizes = [int(x) for x in args.nodes.split(",")]
    except ValueError:
        parser.error(f"--nodes must be comma-separated whole numbers (got {args.nodes!r})")
    if any(n < 1 for n in sizes):
        parser.error(f"--nodes: every size must be at least 1 (got {args.nodes!r})")
    url = os.environ.get("FLOWKIT_TEST_MONGO_URL")
    if not url:
        raise SystemExit('FLOWKIT_TEST_MONGO_URL is not set: eval "$(scripts/testenv env kafka ferretdb)"')
    print("nodes in the task  update p50 ms  read p50 ms")
    for n, write, read in asyncio.run(measure(url, sizes)):
        print(f"{n:>17,}  {write:>13.1f}  {read:>11.1f}")


if __name__ == "__main__":
    main()
