"""Bad and repeated input on the wire, against real Kafka and the MongoDB-protocol server.

Malformed records (not JSON, a wrong schema, an unknown kind, a newer protocol version)
on the topics the coordinator and the workers read are set aside in the dead-letter
topic with the reason, and the task still finishes exactly. Every status message and
command of a finished task replayed, and duplicated ones while it runs, change nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from flowkit import Coordinator, CoordinatorConfig, Worker, WorkerConfig
from flowkit.states import State, TaskStatus
from flowkit.worker.handlers.base import BatchResult, Handler

from .faults.handlers import Sink, SlowSource, streaming_graph

COUNT, PER_BATCH = 20, 2
BAD_RECORDS = [
    b"\x89PNG not json",
    json.dumps({"v": 1, "kind": "status.finished", "attempt": "not a number"}).encode(),
    json.dumps({"v": 1, "kind": "status.exploded", "task_id": "t"}).encode(),
    json.dumps({"v": 99, "kind": "status.finished", "task_id": "t", "from": "the future"}).encode(),
]


class CountingSource(SlowSource):
    def __init__(self) -> None:
        self.processed: list[str] = []

    async def process_batch(self, batch: Any, ctx: Any) -> Any:
        self.processed.append(batch.batch_uid)
        return await super().process_batch(batch, ctx)


@pytest.fixture
async def runtime(
    kafka_bootstrap: str, kafka_topic_prefix: str, mongo_db: Any
) -> AsyncIterator[dict[str, Any]]:
    wire = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": kafka_topic_prefix}
    coordinator = Coordinator(db=mongo_db, cfg=CoordinatorConfig(**wire, lease_check_interval_sec=0.5))
    source = CountingSource()
    worker = Worker(
        db=mongo_db,
        cfg=WorkerConfig(**wire, roles=["source", "sink"], capacity=2, hb_interval_sec=0.5),
        handlers={"source": source, "sink": Sink()},
    )
    await coordinator.start()
    await worker.start()
    try:
        yield {
            "coordinator": coordinator,
            "source": source,
            "prefix": kafka_topic_prefix,
            "kafka": kafka_bootstrap,
        }
    finally:
        await worker.stop()
        await coordinator.stop()


def assert_exact(status: TaskStatus) -> None:
    rows = COUNT * PER_BATCH
    assert status.status == State.FINISHED, status.summary()
    assert (status.nodes["source"].batches, status.nodes["source"].metrics) == (COUNT, {"rows": rows})
    assert status.nodes["sink"].batches == COUNT
    assert status.nodes["sink"].metrics == {"rows": rows, "total": sum(range(rows))}


async def read_all(kafka: str, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        records: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return records
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()


async def produce(kafka: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def wait_consumed(kafka: str, group: str, topic: str, timeout: float = 30) -> None:
    """Until ``group`` has committed every record of ``topic`` (its members read them all)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer.topics()  # metadata not loaded yet
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            if all(committed.get(tp) is not None and committed[tp].offset >= end for tp, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} did not consume {topic} in {timeout}s: {committed} < {ends}")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        await admin.close()


async def test_malformed_records_are_dead_lettered_and_the_task_still_finishes_exactly(
    runtime: dict[str, Any],
) -> None:
    coordinator, prefix, kafka = runtime["coordinator"], runtime["prefix"], runtime["kafka"]
    task_id = await coordinator.create_task(params={}, graph=streaming_graph(COUNT, 20, PER_BATCH))
    bad = [(b"t", value) for value in BAD_RECORDS]
    await produce(kafka, f"{prefix}status.v1", bad)
    await produce(kafka, f"{prefix}cmd.source.v1", bad)

    assert_exact(await coordinator.wait_task(task_id, timeout=60))
    dead = await read_all(kafka, f"{prefix}deadletter.v1")
    by_source = {(dict(r.headers)["flowkit-source-topic"].decode(), r.value) for r in dead}
    for value in BAD_RECORDS:  # each bad record kept, from each topic, with its reason
        assert (f"{prefix}status.v1", value) in by_source
        assert (f"{prefix}cmd.source.v1", value) in by_source
    reasons = {dict(r.headers)["flowkit-error"].decode().split(":")[0] for r in dead}
    assert {"not JSON", "wrong schema", "unknown protocol version v=99 (this is v1)"} <= reasons


async def test_replaying_every_message_of_a_finished_task_changes_nothing(runtime: dict[str, Any]) -> None:
    coordinator, prefix, kafka = runtime["coordinator"], runtime["prefix"], runtime["kafka"]
    task_id = await coordinator.create_task(params={}, graph=streaming_graph(COUNT, 5, PER_BATCH))
    before = await coordinator.wait_task(task_id, timeout=60)
    assert_exact(before)
    processed = list(runtime["source"].processed)
    assert sorted(processed) == [f"b{i:04d}" for i in range(COUNT)]

    # Every status message and every command of the task, again, twice over.
    for topic in (f"{prefix}status.v1", f"{prefix}cmd.source.v1", f"{prefix}cmd.sink.v1"):
        records = [(r.key, r.value) for r in await read_all(kafka, topic)]
        assert records, topic
        await produce(kafka, topic, records + records)
    for role in ("source", "sink"):  # the workers took every replayed command
        await wait_consumed(kafka, f"{prefix}flowkit.workers.{role}", f"{prefix}cmd.{role}.v1")
    # A fresh task after the replay: once it is done, the coordinator has read what came before.
    marker = await coordinator.create_task(params={}, graph=streaming_graph(1, 1, PER_BATCH))
    assert (await coordinator.wait_task(marker, timeout=60)).status == State.FINISHED

    after = await coordinator.get_status(task_id)
    assert after.summary() == before.summary()
    assert runtime["source"].processed[: len(processed)] == processed
    assert len(runtime["source"].processed) == len(processed) + 1  # only the marker's batch ran


async def test_a_run_command_delivered_again_while_it_runs_runs_once_and_holds_one_slot(
    runtime: dict[str, Any],
) -> None:
    coordinator, prefix, kafka = runtime["coordinator"], runtime["prefix"], runtime["kafka"]
    graph = streaming_graph(COUNT, 250, PER_BATCH)  # 5 s: the copies come while it runs
    del graph["nodes"][1]["io"]["start_when"]  # the sink waits for the end: a slot stays free
    task_id = await coordinator.create_task(params={}, graph=graph)
    deadline = time.monotonic() + 30
    while (await coordinator.get_status(task_id)).nodes["source"].batches < 2:
        assert time.monotonic() < deadline, "the source did not start"
        await asyncio.sleep(0.05)

    # The running source's command, three more times (a re-send and redeliveries).
    topic = f"{prefix}cmd.source.v1"
    records = [(r.key, r.value) for r in await read_all(kafka, topic)]
    assert len(records) == 1, records
    await produce(kafka, topic, records * 3)
    await wait_consumed(kafka, f"{prefix}flowkit.workers.source", topic)
    running = (await coordinator.get_status(task_id)).nodes["source"].status
    assert running == State.RUNNING, "the copies came too late to prove anything"

    assert_exact(await coordinator.wait_task(task_id, timeout=60))
    assert sorted(runtime["source"].processed) == [f"b{i:04d}" for i in range(COUNT)]


class Quick(Handler):
    async def process_batch(self, batch: Any, ctx: Any) -> BatchResult:
        return BatchResult(metrics={"rows": 3})


async def test_a_short_run_reports_its_start_and_batches_with_its_outcome_in_one_write(
    kafka_bootstrap: str, kafka_topic_prefix: str, mongo_db: Any
) -> None:
    wire = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": kafka_topic_prefix}
    coordinator = Coordinator(db=mongo_db, cfg=CoordinatorConfig(**wire))
    worker = Worker(db=mongo_db, cfg=WorkerConfig(**wire, roles=["quick"]), handlers={"quick": Quick()})
    await coordinator.start()
    await worker.start()
    try:
        graph = {
            "nodes": [
                {"node_id": "a", "type": "quick"},
                {"node_id": "b", "type": "quick", "depends_on": ["a"]},
            ]
        }
        status = await coordinator.wait_task(
            await coordinator.create_task(params={}, graph=graph), timeout=60
        )
    finally:
        await worker.stop()
        await coordinator.stop()
    assert status.status == State.FINISHED, status.summary()
    for node in status.nodes.values():
        assert (node.batches, node.metrics) == (1, {"rows": 3})
        assert node.started_at is not None and node.finished_at is not None
        assert node.started_at <= node.finished_at
    kinds = [
        json.loads(r.value)["kind"] for r in await read_all(kafka_bootstrap, f"{kafka_topic_prefix}status.v1")
    ]
    assert kinds == ["status.finished", "status.finished"], "no accepted nor batch report of their own"
    assert await mongo_db["flowkit_batches"].count_documents({}) == 0
    runs = await mongo_db["flowkit_runs"].find({}, {"_id": 0, "node_id": 1, "batches": 1}).to_list(None)
    assert sorted((r["node_id"], [b["batch_uid"] for b in r["batches"]]) for r in runs) == [
        ("a", ["inline"]),
        ("b", ["inline"]),
    ]
