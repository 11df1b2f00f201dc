"""Distributed-mode overhead over real Kafka and the MongoDB-protocol server, with the floor.

    eval "$(scripts/testenv env kafka ferretdb)"
    .venv/bin/python bench/distributed.py [--repeat 3] [--quick]

The same shapes as ``bench/embedded.py`` on :class:`flowkit.testing.distributed.
DistributedRuntime` (coordinator and one worker per role in this process, talking over
the real services), next to the floor of the same machine in the same run: a raw
aiokafka produce -> consume round trip and a raw pymongo ``find_one_and_update``.
A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shapes import chain, fan, streaming

from flowkit.testing.distributed import DistributedRuntime


def _runtime(handlers: dict[str, Any]) -> DistributedRuntime:
    return DistributedRuntime(
        handlers,
        kafka_bootstrap=os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"],
        mongo_url=os.environ["FLOWKIT_TEST_MONGO_URL"],
    )


async def kafka_round_trip_ms(samples: int = 200) -> float:
    """p50 of one message produced and consumed back (acks=all, as FlowKit sends)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap, topic = os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"], f"floor-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    await consumer.getone()
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            await consumer.getone()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    return statistics.median(times)


async def mongo_update_ms(samples: int = 200) -> float:
    """p50 of one ``find_one_and_update`` with a guard, as FlowKit's conditional writes."""
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(os.environ["FLOWKIT_TEST_MONGO_URL"])
    db = client[f"floor_{uuid.uuid4().hex[:8]}"]
    await db.docs.insert_one({"_id": "d", "n": 0})
    times = []
    try:
        for i in range(samples):
            started = time.perf_counter()
            await db.docs.find_one_and_update({"_id": "d", "n": i}, {"$inc": {"n": 1}})
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await client.drop_database(db.name)
        await client.close()
    return statistics.median(times)


Scenario = tuple[str, str, Callable[[], Awaitable[float]]]


def scenarios(quick: bool) -> list[Scenario]:
    size = 1 if quick else 2
    return [
        ("floor: Kafka produce -> consume round trip p50", "ms", kafka_round_trip_ms),
        ("floor: find_one_and_update p50", "ms", mongo_update_ms),
        (f"chain of {50 * size} no-op nodes", "ms/node", lambda: chain(_runtime, 50 * size)),
        (f"{500 * size}-wide fan-out + fan-in", "nodes/s", lambda: fan(_runtime, 500 * size)),
        (
            f"3-stage first_batch pipeline, {1000 * size} batches",
            "batches/s",
            lambda: streaming(_runtime, 1000 * size),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="half the sizes")
    args = parser.parse_args()
    print(f"{'scenario':52} {'median':>10} {'min..max':>21}  unit")
    for name, unit, scenario in scenarios(args.quick):
        figures = [asyncio.run(scenario()) for _ in range(args.repeat)]
        spread = f"{min(figures):,.2f}..{max(figures):,.2f}"
        print(f"{name:52} {statistics.median(figures):>10,.2f} {spread:>21}  {unit}", flush=True)


if __name__ == "__main__":
    main()
