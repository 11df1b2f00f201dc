"""Smoke test of the test broker: a consumer group splits partitions and keeps commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 4
# Short heartbeats so that a rebalance is noticed in well under a second.
GROUP_TIMINGS = {"heartbeat_interval_ms": 200, "session_timeout_ms": 6000}


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, per_partition: int, start: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(start, start + per_partition):
            for partition in range(PARTITIONS):
                await producer.send(topic, f"{partition}:{i}".encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def member(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMINGS,
    )


async def consume(consumer: AIOKafkaConsumer, count: int, into: list[tuple[int, int]]) -> None:
    """Append (partition, offset) of `count` records to `into`."""
    while len(into) < count:
        batches = await consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            into.extend((tp.partition, r.offset) for r in records)


async def test_group_of_two_splits_four_partitions_and_resumes_after_commits(
    kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    topic, group = f"{kafka_topic_prefix}split", f"{kafka_topic_prefix}group"
    await create_topic(kafka_bootstrap, topic)
    first, second = member(kafka_bootstrap, topic, group), member(kafka_bootstrap, topic, group)
    await first.start()
    await second.start()
    try:
        # Both members consume while the group rebalances to two partitions each.
        got_first: list[tuple[int, int]] = []
        got_second: list[tuple[int, int]] = []
        tasks = [
            asyncio.create_task(consume(first, 10**9, got_first)),
            asyncio.create_task(consume(second, 10**9, got_second)),
        ]
        await wait_for(
            lambda: len(first.assignment()) == 2 and len(second.assignment()) == 2,
            30,
            "two partitions for each member",
        )
        split = ({tp.partition for tp in first.assignment()}, {tp.partition for tp in second.assignment()})
        assert split[0].isdisjoint(split[1]) and split[0] | split[1] == set(range(PARTITIONS))

        await produce(kafka_bootstrap, topic, per_partition=10, start=0)
        await wait_for(lambda: len(got_first) + len(got_second) == 40, 30, "40 records")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert {p for p, _ in got_first} == split[0]
        assert {p for p, _ in got_second} == split[1]
        await first.commit()
        await second.commit()
        for partition in range(PARTITIONS):
            owner = first if partition in split[0] else second
            assert await owner.committed(TopicPartition(topic, partition)) == 10
    finally:
        await first.stop()
        await second.stop()

    # A new member of the group starts from the committed offsets, not from the start.
    await produce(kafka_bootstrap, topic, per_partition=2, start=10)
    late = member(kafka_bootstrap, topic, group)
    await late.start()
    try:
        got_late: list[tuple[int, int]] = []
        await asyncio.wait_for(consume(late, 8, got_late), 30)
    finally:
        await late.stop()
    assert sorted(got_late) == [(p, o) for p in range(PARTITIONS) for o in (10, 11)]
