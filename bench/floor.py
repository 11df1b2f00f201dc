"""The floors: what the same shapes cost with nothing but the machine's own parts.

Embedded: two asyncio tasks handing one message each way per node over
``asyncio.Queue`` (a chain awaits each reply; a fan-out puts all, then gets all, with
16 worker tasks). Streaming: three tasks, each handing every batch on to the next
over a queue. Distributed: a raw aiokafka produce -> consume round trip and a raw
pymongo ``find_one_and_update`` against the test services.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from shapes import SCALE_NODES

WORKERS = 16


async def _serve(inbox: asyncio.Queue[int | None], outbox: asyncio.Queue[int]) -> None:
    while (message := await inbox.get()) is not None:
        outbox.put_nowait(message)


class _Pool:
    """``WORKERS`` tasks answering each message on one reply queue."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.inbox: asyncio.Queue[int | None] = asyncio.Queue()
        self.replies: asyncio.Queue[int] = asyncio.Queue()
        self._tasks = [asyncio.create_task(_serve(self.inbox, self.replies)) for _ in range(workers)]

    async def close(self) -> None:
        for _ in self._tasks:
            self.inbox.put_nowait(None)
        await asyncio.gather(*self._tasks)


async def _chain(nodes: int) -> float:
    pool = _Pool(workers=1)
    started = time.perf_counter()
    for i in range(nodes):
        pool.inbox.put_nowait(i)
        await pool.replies.get()
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


async def _fan(width: int) -> float:
    pool = _Pool()
    started = time.perf_counter()
    pool.inbox.put_nowait(-1)  # the root
    await pool.replies.get()
    for i in range(width):
        pool.inbox.put_nowait(i)
    for _ in range(width):
        await pool.replies.get()
    pool.inbox.put_nowait(-2)  # the sink
    await pool.replies.get()
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


async def _streaming(batches: int) -> float:
    first: asyncio.Queue[int | None] = asyncio.Queue()
    second: asyncio.Queue[int | None] = asyncio.Queue()
    done = 0

    async def forward(inbox: asyncio.Queue[int | None], outbox: asyncio.Queue[int | None]) -> None:
        while (batch := await inbox.get()) is not None:
            outbox.put_nowait(batch)
        outbox.put_nowait(None)

    async def last() -> None:
        nonlocal done
        while await second.get() is not None:
            done += 1

    started = time.perf_counter()
    stages = [asyncio.create_task(forward(first, second)), asyncio.create_task(last())]
    for i in range(batches):
        first.put_nowait(i)
    first.put_nowait(None)
    await asyncio.gather(*stages)
    assert done == batches
    return time.perf_counter() - started


async def _scale(tasks: int) -> float:
    pool = _Pool()
    waiting: dict[int, asyncio.Future[None]] = {}
    loop = asyncio.get_running_loop()

    async def route() -> None:
        while True:
            waiting.pop(await pool.replies.get()).set_result(None)

    async def one_task(task: int) -> None:
        for node in range(SCALE_NODES):
            key = task * SCALE_NODES + node
            waiting[key] = loop.create_future()
            pool.inbox.put_nowait(key)
            await waiting[key]

    router = asyncio.create_task(route())
    started = time.perf_counter()
    await asyncio.gather(*(one_task(t) for t in range(tasks)))
    elapsed = time.perf_counter() - started
    router.cancel()
    await pool.close()
    return elapsed


FLOOR_RUNS = 5


def asyncio_floor(shape: str, size: int) -> dict[str, float]:
    """The asyncio floor of one shape (median of ``FLOOR_RUNS``: one run is too short to
    time alone), with the same figures the runtimes report."""
    runs = [_asyncio_floor(shape, size) for _ in range(FLOOR_RUNS)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def _asyncio_floor(shape: str, size: int) -> dict[str, float]:
    if shape == "chain":
        elapsed = asyncio.run(_chain(size))
        return {"ms_per_node": elapsed * 1000 / size}
    if shape == "fan":
        elapsed = asyncio.run(_fan(size))
        return {"nodes_per_s": (size + 2) / elapsed, "ms_per_node": elapsed * 1000 / (size + 2)}
    if shape == "streaming":
        elapsed = asyncio.run(_streaming(size))
        return {"batches_per_s": size / elapsed, "ms_per_batch": elapsed * 1000 / size}
    if shape == "scale":
        elapsed = asyncio.run(_scale(size))
        nodes = size * SCALE_NODES
        return {"nodes_per_s": nodes / elapsed, "ms_per_node": elapsed * 1000 / nodes}
    raise ValueError(f"unknown shape {shape!r}")


# -- the services' floor ----------------------------------------------------------------


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[round(0.99 * (len(ordered) - 1))]}


async def _create_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> None:
    """Create ``topic`` and wait until the broker names its leader: a consumer started
    before that logs it "not found in cluster metadata" (and retries)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (described,) = await admin.describe_topics([topic])
            if described.get("error_code") == 0 and all(p["leader"] >= 0 for p in described["partitions"]):
                return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def kafka_round_trip(bootstrap: str, samples: int = 200) -> dict[str, float]:
    """One message produced (acks=all, idempotent, as FlowKit sends) and consumed back."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    topic = f"bench-floor-{uuid.uuid4().hex[:8]}"
    await _create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    times = []
    try:
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.start()
        await consumer.getone()
        for _ in range(samples):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            await consumer.getone()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    return _percentiles(times)


async def mongo_update(url: str, samples: int = 200) -> dict[str, float]:
    """One ``find_one_and_update`` with a guard in the filter, as FlowKit's conditional writes."""
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000)
    db = client[f"bench_floor_{uuid.uuid4().hex[:8]}"]
    times = []
    try:
        await db.docs.insert_one({"_id": "d", "n": 0})
        for i in range(samples):
            started = time.perf_counter()
            await db.docs.find_one_and_update({"_id": "d", "n": i}, {"$inc": {"n": 1}})
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await client.drop_database(db.name)
        await client.close()
    return _percentiles(times)


def kafka_floor(bootstrap: str) -> dict[str, float]:
    """:func:`kafka_round_trip` in a process of its own (``run.py`` measures in fresh processes)."""
    return asyncio.run(kafka_round_trip(bootstrap))


def mongo_floor(url: str) -> dict[str, float]:
    """:func:`mongo_update` in a process of its own."""
    return asyncio.run(mongo_update(url))
