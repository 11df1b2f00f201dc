"""The Bus contract, for MemoryBus and KafkaBus alike (`bus_kit`), and what only Kafka
can show (`kafka_kit`): offsets surviving a restart, bytes that are not envelopes."""

from __future__ import annotations

import asyncio
import json

import pytest

from flowkit.protocol import DEAD_LETTER_TOPIC, Envelope, Kind

from .conftest import BusKit, wait_for

TOPIC = "cmd.contract.v1"
OTHER = "status.contract.v1"


def run_cmd(task_id: str, i: int) -> Envelope:
    return Envelope(kind=Kind.RUN, task_id=task_id, node_id="n", payload={"task": task_id, "i": i})


async def assert_quiet(kit: BusKit, seconds: float = 0.5) -> None:
    """Nothing more arrives within `seconds` (no duplicates in flight)."""
    before = [len(c.received) for c in kit.collectors]
    with pytest.raises(AssertionError, match="timed out"):
        await wait_for(lambda: [len(c.received) for c in kit.collectors] != before, seconds, "an extra")


async def test_members_of_a_group_share_messages_each_to_exactly_one(bus_kit: BusKit) -> None:
    first = await bus_kit.collect(bus_kit.bus, [TOPIC], "workers")
    second = await bus_kit.collect(await bus_kit.new_bus(), [TOPIC], "workers")
    sent = [run_cmd(f"task-{i}", i) for i in range(24)]
    for message in sent:
        await bus_kit.bus.publish(TOPIC, message)

    await wait_for(lambda: len(first.received) + len(second.received) >= len(sent), 15, "all messages")
    await assert_quiet(bus_kit)
    got = [d.message.msg_id for d in first.received + second.received]
    assert sorted(got) == sorted(m.msg_id for m in sent)
    assert first.received and second.received, "both members take a share"


async def test_every_group_sees_every_message(bus_kit: BusKit) -> None:
    coordinators = await bus_kit.collect(bus_kit.bus, [TOPIC], "coordinators")
    auditors = await bus_kit.collect(await bus_kit.new_bus(), [TOPIC], "auditors")
    sent = [run_cmd(f"task-{i}", i) for i in range(10)]
    for message in sent:
        await bus_kit.bus.publish(TOPIC, message)

    await wait_for(lambda: len(coordinators.received) == len(auditors.received) == 10, 15, "both groups")
    await assert_quiet(bus_kit)
    for collector in (coordinators, auditors):
        assert sorted(d.message.msg_id for d in collector.received) == sorted(m.msg_id for m in sent)


async def test_messages_of_one_key_keep_their_order_and_arrive_unchanged(bus_kit: BusKit) -> None:
    member = await bus_kit.collect(bus_kit.bus, [TOPIC], "ordered")
    sent = [run_cmd(f"task-{k}", i) for i in range(15) for k in range(4)]
    for message in sent:
        await bus_kit.bus.publish(TOPIC, message)

    await wait_for(lambda: len(member.received) >= len(sent), 15, "all messages")
    for k in range(4):
        assert [p["i"] for p in member.payloads if p["task"] == f"task-{k}"] == list(range(15))
    by_id = {d.message.msg_id: d.message for d in member.received}
    assert all(by_id[m.msg_id] == m for m in sent), "envelopes arrive unchanged"


async def test_a_group_subscribed_to_two_topics_gets_both(bus_kit: BusKit) -> None:
    both = await bus_kit.collect(bus_kit.bus, [TOPIC, OTHER], "both")
    await bus_kit.bus.publish(TOPIC, run_cmd("a", 1))
    await bus_kit.bus.publish(OTHER, run_cmd("b", 2))
    await wait_for(lambda: len(both.received) == 2, 15, "one message from each topic")
    assert sorted(p["task"] for p in both.payloads) == ["a", "b"]


# -- Kafka only: MemoryBus keeps no offsets (ack is a no-op, nothing outlives the
# -- process) and carries objects, never bytes, so neither can be expressed there.


@pytest.mark.integration
async def test_acked_messages_are_not_redelivered_after_a_restart_unacked_ones_are(
    kafka_kit: BusKit,
) -> None:
    acked = {0, 1, 3}  # 2 is never acked: the commit may not pass it, so 3 comes back too
    old = await kafka_kit.collect(
        kafka_kit.bus, [TOPIC], "restarting", ack=lambda d: d.message.payload["i"] in acked
    )
    for i in range(6):
        await kafka_kit.bus.publish(TOPIC, run_cmd("one-task", i))
    await wait_for(lambda: len(old.received) == 6, 15, "the first member to take all six")
    await old.close()

    new = await kafka_kit.collect(await kafka_kit.new_bus(), [TOPIC], "restarting")
    await wait_for(lambda: len(new.received) >= 4, 15, "the un-acked messages again")
    await assert_quiet(kafka_kit)
    assert [p["i"] for p in new.payloads] == [2, 3, 4, 5]


@pytest.mark.integration
async def test_malformed_messages_go_to_dead_letters_and_the_consumer_keeps_going(
    kafka_kit: BusKit, kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    good = await kafka_kit.collect(kafka_kit.bus, [TOPIC], "tolerant")
    bad = {
        b"not json at all": "not JSON",
        b"[1, 2, 3]": "not a JSON object",
        json.dumps({"v": 1, "kind": "cmd.explode"}).encode(): "wrong schema",
        json.dumps({"v": 99, "kind": "cmd.run"}).encode(): "unknown protocol version",
        json.dumps({"kind": "cmd.run"}).encode(): "no protocol version",
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in bad:
            await producer.send_and_wait(kafka_topic_prefix + TOPIC, value, key=b"one-task")
    finally:
        await producer.stop()
    await kafka_kit.bus.publish(TOPIC, run_cmd("one-task", 1))
    await wait_for(lambda: len(good.received) == 1, 15, "the valid message after the bad ones")
    assert good.payloads == [{"task": "one-task", "i": 1}]

    dead_letters = kafka_topic_prefix + DEAD_LETTER_TOPIC
    dead = AIOKafkaConsumer(dead_letters, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await dead.start()
    try:
        records = []
        while len(records) < len(bad):
            batches = await asyncio.wait_for(dead.getmany(timeout_ms=500), 15)
            records += [r for rs in batches.values() for r in rs]
    finally:
        await dead.stop()
    for record in records:
        headers = dict(record.headers)
        assert bad[record.value] in headers["flowkit-error"].decode()
        assert headers["flowkit-source-topic"].decode() == kafka_topic_prefix + TOPIC
        assert int(headers["flowkit-source-offset"]) >= 0
    assert sorted(r.value for r in records) == sorted(bad)

    # The bad records were committed with the good one: a new member starts after them.
    await good.close()
    later = await kafka_kit.collect(await kafka_kit.new_bus(), [TOPIC], "tolerant")
    await kafka_kit.bus.publish(TOPIC, run_cmd("one-task", 2))
    await wait_for(lambda: len(later.received) >= 1, 15, "the next message")
    await assert_quiet(kafka_kit)
    assert later.payloads == [{"task": "one-task", "i": 2}]


@pytest.mark.integration
async def test_kafka_bus_start_is_loud_when_misused_and_stop_is_safe_twice(
    kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    from flowkit.bus.kafka import KafkaBus

    bus = KafkaBus(kafka_bootstrap, namespace=kafka_topic_prefix, sasl_plain_password="secret")
    assert "secret" not in repr(bus)
    with pytest.raises(RuntimeError, match="not started"):
        await bus.publish(TOPIC, run_cmd("a", 1))
    await bus.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await bus.start()
    finally:
        await bus.stop()
        await bus.stop()
    with pytest.raises(TypeError, match="unknown option"):
        KafkaBus(kafka_bootstrap, sasl_pasword="typo")
