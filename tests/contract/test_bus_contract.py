"""The Bus contract, for MemoryBus and KafkaBus alike (`bus_kit`), and what only Kafka
can show (`kafka_kit`): offsets surviving a restart, coalesced commits, rebalances,
read errors, bytes that are not envelopes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowkit.protocol import DEAD_LETTER_TOPIC, Envelope, Kind

from .conftest import BusKit, Collector, wait_for

TOPIC = "cmd.contract.v1"
OTHER = "status.contract.v1"


def run_cmd(task_id: str, i: int) -> Envelope:
    return Envelope(kind=Kind.RUN, task_id=task_id, node_id="n", payload={"task": task_id, "i": i})


async def assert_quiet(kit: BusKit, seconds: float = 0.5) -> None:
    """Nothing more arrives within `seconds` (no duplicates in flight)."""
    before = [len(c.received) for c in kit.collectors]
    with pytest.raises(AssertionError, match="timed out"):
        await wait_for(lambda: [len(c.received) for c in kit.collectors] != before, seconds, "an extra")


async def flushed(collector: Collector) -> None:
    await asyncio.wait_for(collector.sub.flush_acks(), 15)


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


async def test_a_broadcast_subscriber_sees_what_is_published_after_it_subscribed_not_before(
    bus_kit: BusKit,
) -> None:
    group = await bus_kit.collect(bus_kit.bus, [TOPIC], "history")
    before = [run_cmd(f"task-{k}", 0) for k in range(8)]
    for message in before:
        await bus_kit.bus.publish(TOPIC, message)
    await wait_for(lambda: len(group.received) == 8, 15, "the group to take the history")

    live = await bus_kit.collect(await bus_kit.new_bus(), [TOPIC], None)
    after = [run_cmd(f"task-{k}", 1) for k in range(8)]
    for message in after:  # at once: subscribe() returned, so these must be seen
        await bus_kit.bus.publish(TOPIC, message)

    await wait_for(lambda: len(live.received) >= 8, 15, "the broadcast subscriber")
    await wait_for(lambda: len(group.received) >= 16, 15, "the group")
    await assert_quiet(bus_kit)
    assert sorted(d.message.msg_id for d in live.received) == sorted(m.msg_id for m in after)
    assert len(group.received) == 16, "a broadcast subscriber takes nothing from a group"
    await flushed(live)  # acks on a broadcast subscription commit nothing: at once


async def test_every_broadcast_subscriber_gets_every_message(bus_kit: BusKit) -> None:
    readers = [await bus_kit.collect(await bus_kit.new_bus(), [TOPIC, OTHER], None) for _ in range(3)]
    sent = [(TOPIC if i % 2 else OTHER, run_cmd(f"task-{i % 3}", i)) for i in range(12)]
    for topic, message in sent:
        await bus_kit.bus.publish(topic, message)

    await wait_for(lambda: all(len(r.received) >= 12 for r in readers), 15, "every reader")
    await assert_quiet(bus_kit)
    for reader in readers:
        assert sorted(d.message.msg_id for d in reader.received) == sorted(m.msg_id for _, m in sent)


async def test_publish_many_delivers_each_message_once_keeping_the_order_of_each_key(
    bus_kit: BusKit,
) -> None:
    member = await bus_kit.collect(bus_kit.bus, [TOPIC, OTHER], "batched")
    topics = {"task-0": TOPIC, "task-1": TOPIC, "task-2": OTHER, "task-3": OTHER}
    sent = [(topics[f"task-{k}"], run_cmd(f"task-{k}", i)) for i in range(25) for k in range(4)]
    await bus_kit.bus.publish_many(sent)
    await bus_kit.bus.publish_many([])

    await wait_for(lambda: len(member.received) >= len(sent), 15, "the whole batch")
    await assert_quiet(bus_kit)
    assert sorted(d.message.msg_id for d in member.received) == sorted(m.msg_id for _, m in sent)
    for k in range(4):
        assert [p["i"] for p in member.payloads if p["task"] == f"task-{k}"] == list(range(25))
    by_id = {d.message.msg_id: d.message for d in member.received}
    assert all(by_id[m.msg_id] == m for _, m in sent), "envelopes arrive unchanged"


async def test_stop_ends_every_subscription_and_is_safe_twice(bus_kit: BusKit) -> None:
    bus = await bus_kit.new_bus()
    readers = [await bus_kit.collect(bus, [TOPIC], "stopping"), await bus_kit.collect(bus, [TOPIC], None)]
    await bus.stop()
    await wait_for(lambda: all(r.task is not None and r.task.done() for r in readers), 15, "both to end")
    await bus.stop()
    for reader in readers:
        assert reader.task is not None and reader.task.exception() is None


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


@pytest.mark.integration
async def test_subscribing_to_topics_just_created_does_not_log_them_missing(
    kafka_bootstrap: str, kafka_topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic is created on first use; a client asking about it before the broker's
    metadata has it is told it does not exist, and aiokafka logs that as an error
    (what every fresh installation's first `flowkit submit --wait` printed)."""
    from flowkit.bus.kafka import KafkaBus

    bus = KafkaBus(kafka_bootstrap, namespace=kafka_topic_prefix)
    await bus.start()
    try:
        with caplog.at_level(logging.WARNING, logger="aiokafka"):
            for topic in ("fresh.a.v1", "fresh.b.v1"):
                sub = await bus.subscribe([topic], group=None)
                await sub.close()
            group_sub = await bus.subscribe(["fresh.c.v1"], group="fresh-group")
            await group_sub.close()
    finally:
        await bus.stop()
    # Only that message: a partition whose leader is still loading may answer one fetch
    # with NotLeaderForPartition, which aiokafka also logs, and retries.
    unknown = [r.getMessage() for r in caplog.records if "not found in cluster metadata" in r.getMessage()]
    assert unknown == []


async def committed(kit: BusKit, bootstrap: str, group: str) -> dict[int, int | None]:
    """The group's committed position on each partition of TOPIC, as the broker has it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    bus: Any = kit.bus
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=bus.topic_name(group), enable_auto_commit=False
    )
    await reader.start()  # not subscribed: it reads offsets without joining the group
    try:
        topic = bus.topic_name(TOPIC)
        return {p: await reader.committed(TopicPartition(topic, p)) for p in range(bus.partitions)}
    finally:
        await reader.stop()


def total(positions: dict[int, int | None]) -> int:
    return sum(p or 0 for p in positions.values())


@pytest.mark.integration
async def test_flushed_acks_are_committed_so_a_new_member_starts_after_the_last(
    kafka_kit: BusKit, kafka_bootstrap: str
) -> None:
    old = await kafka_kit.collect(kafka_kit.bus, [TOPIC], "flushing")
    await kafka_kit.bus.publish_many([(TOPIC, run_cmd(f"task-{i % 7}", i)) for i in range(200)])
    await wait_for(lambda: len(old.received) == 200, 15, "all 200 taken and acked")
    await flushed(old)
    assert total(await committed(kafka_kit, kafka_bootstrap, "flushing")) == 200

    await old.close()
    new = await kafka_kit.collect(await kafka_kit.new_bus(), [TOPIC], "flushing")
    await kafka_kit.bus.publish(TOPIC, run_cmd("task-0", 200))
    await wait_for(lambda: len(new.received) >= 1, 15, "the next message")
    await assert_quiet(kafka_kit)
    assert [p["i"] for p in new.payloads] == [200]


@pytest.mark.integration
async def test_the_commit_stops_below_an_unacked_message_though_later_ones_are_acked(
    kafka_kit: BusKit, kafka_bootstrap: str
) -> None:
    unacked = 5
    member = await kafka_kit.collect(
        kafka_kit.bus, [TOPIC], "gapped", ack=lambda d: d.message.payload["i"] != unacked
    )
    await kafka_kit.bus.publish_many([(TOPIC, run_cmd("one-task", i)) for i in range(200)])
    await wait_for(lambda: len(member.received) == 200, 15, "all 200")
    await flushed(member)
    positions = await committed(kafka_kit, kafka_bootstrap, "gapped")
    assert sorted(positions.values(), key=str) == [unacked, None, None, None], "one partition, at 5"

    (late,) = [d for d in member.received if d.message.payload["i"] == unacked]
    await late.ack()
    await flushed(member)
    assert total(await committed(kafka_kit, kafka_bootstrap, "gapped")) == 200


async def holding_unacked(kit: BusKit, group: str, count: int) -> Collector:
    """A member of ``group`` that has taken ``count`` messages and acked none."""
    member = await kit.collect(kit.bus, [TOPIC], group, ack=lambda _: False)
    await kit.bus.publish_many([(TOPIC, run_cmd(f"task-{i % 5}", i)) for i in range(count)])
    await wait_for(lambda: len(member.received) == count, 15, f"all {count}, not acked yet")
    return member


def commits_of(
    member: Collector, monkeypatch: pytest.MonkeyPatch, before: Callable[[], Awaitable[None]] | None = None
) -> list[dict[Any, Any]]:
    """The offsets of every commit the member's consumer makes from now on, each listed
    once it landed; ``before`` is awaited before each goes to the broker."""
    consumer: Any = member.sub._consumer
    calls: list[dict[Any, Any]] = []
    real_commit = consumer.commit

    async def counted(offsets: dict[Any, Any]) -> None:
        if before is not None:
            await before()
        await real_commit(offsets)
        calls.append(dict(offsets))

    monkeypatch.setattr(consumer, "commit", counted)
    return calls


@pytest.mark.integration
async def test_a_burst_of_acks_is_committed_in_one_call(
    kafka_kit: BusKit, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await holding_unacked(kafka_kit, "burst", 50)
    calls = commits_of(member, monkeypatch)
    for delivery in member.received:
        await delivery.ack()
    await flushed(member)
    assert len(calls) == 1
    assert total(await committed(kafka_kit, kafka_bootstrap, "burst")) == 50


@pytest.mark.integration
async def test_acks_made_while_a_commit_is_in_flight_go_into_the_next_one(
    kafka_kit: BusKit, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await holding_unacked(kafka_kit, "in-flight", 50)
    entered, release = asyncio.Event(), asyncio.Event()

    async def held() -> None:
        entered.set()
        await release.wait()

    calls = commits_of(member, monkeypatch, before=held)
    for delivery in member.received[:25]:
        await delivery.ack()
    await asyncio.wait_for(entered.wait(), 10)
    for delivery in member.received[25:]:
        await delivery.ack()
    release.set()
    await flushed(member)
    assert len(calls) == 2
    assert total(await committed(kafka_kit, kafka_bootstrap, "in-flight")) == 50


@pytest.mark.integration
async def test_acks_after_a_commit_wait_for_the_gap_unless_flushed(
    kafka_kit: BusKit, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowkit.bus import kafka_acks

    monkeypatch.setattr(kafka_acks, "COMMIT_GAP_SEC", 60.0)  # longer than the test
    member = await holding_unacked(kafka_kit, "gap", 20)
    calls = commits_of(member, monkeypatch)
    first, *rest = member.received
    await first.ack()
    await wait_for(lambda: len(calls) == 1, 10, "the first ack's commit, at once")
    for delivery in rest:  # each far apart enough for a commit of its own without the gap
        await delivery.ack()
        await asyncio.sleep(0.01)
    assert len(calls) == 1
    await flushed(member)
    assert len(calls) == 2
    assert total(await committed(kafka_kit, kafka_bootstrap, "gap")) == 20


@pytest.mark.integration
async def test_acks_of_messages_taken_before_a_rebalance_are_not_committed(
    kafka_kit: BusKit, kafka_bootstrap: str
) -> None:
    first = await kafka_kit.collect(kafka_kit.bus, [TOPIC], "rebalanced", ack=lambda _: False)
    sent = [run_cmd(f"task-{k}", k) for k in range(12)]  # these keys hash to all 4 partitions
    await kafka_kit.bus.publish_many([(TOPIC, m) for m in sent])
    await wait_for(lambda: len(first.received) == 12, 15, "the first member to take all")
    taken = first.received[:12]
    taken_ids = {id(d) for d in taken}
    assert {d._partition.partition for d in taken} == {0, 1, 2, 3}  # type: ignore[attr-defined]

    await kafka_kit.collect(await kafka_kit.new_bus(), [TOPIC], "rebalanced", ack=lambda _: False)

    def again() -> list[str]:
        return [d.message.msg_id for c in kafka_kit.collectors for d in c.received if id(d) not in taken_ids]

    # Each partition goes to its new owner (the first member keeps two) and starts over.
    await wait_for(lambda: len(again()) >= 12, 15, "every message again, to its new owner")
    await assert_quiet(kafka_kit)
    assert sorted(again()) == sorted(m.msg_id for m in sent)

    for delivery in taken:  # the group has moved on: too late, also where it is ours again
        await delivery.ack()
    await flushed(first)
    assert total(await committed(kafka_kit, kafka_bootstrap, "rebalanced")) == 0


@pytest.mark.integration
async def test_a_read_error_is_logged_and_retried_not_ending_the_iteration(
    kafka_kit: BusKit, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka.errors import KafkaConnectionError

    sub = await kafka_kit.bus.subscribe([TOPIC], "resilient")
    consumer: Any = sub._consumer
    real_getone = consumer.getone
    failures = []

    async def flaky(*partitions: Any) -> Any:
        if len(failures) < 2:
            failures.append(1)
            raise KafkaConnectionError("broker restarting")
        return await real_getone(*partitions)

    monkeypatch.setattr(consumer, "getone", flaky)
    with caplog.at_level(logging.WARNING, logger="flowkit.bus.kafka"):
        member = kafka_kit.read(sub)
        await kafka_kit.bus.publish(TOPIC, run_cmd("a", 1))
        await wait_for(lambda: len(member.received) == 1, 15, "the message after two read errors")
    assert len(failures) == 2
    assert sum("broker restarting" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.integration
async def test_close_gives_up_committing_after_its_flush_timeout(
    kafka_bootstrap: str,
    kafka_topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowkit.bus.kafka import KafkaBus

    from .conftest import GROUP_TIMINGS

    bus = KafkaBus(
        kafka_bootstrap, namespace=kafka_topic_prefix, flush_timeout=0.5, consumer_options=GROUP_TIMINGS
    )
    await bus.start()
    try:
        sub = await bus.subscribe([TOPIC], "unreachable")
        consumer: Any = sub._consumer

        async def hangs(offsets: Any) -> None:
            await asyncio.Event().wait()  # a broker that never answers

        monkeypatch.setattr(consumer, "commit", hangs)
        member = Collector(sub).start()
        await bus.publish(TOPIC, run_cmd("a", 1))
        await wait_for(lambda: len(member.received) == 1, 15, "the message, acked")
        with caplog.at_level(logging.WARNING, logger="flowkit.bus.kafka_acks"):
            await asyncio.wait_for(sub.close(), 10)
        assert "giving up" in caplog.text
        await member.close()
    finally:
        await bus.stop()


@pytest.mark.unit
def test_group_members_are_not_evicted_for_long_handlers_by_default() -> None:
    from flowkit.bus.kafka import KafkaBus

    # Liveness is the heartbeat's (session timeout); stuck handlers are the run leases'.
    assert KafkaBus("k:9092").consumer_options["max_poll_interval_ms"] >= 24 * 3600 * 1000
    chosen = KafkaBus("k:9092", consumer_options={"max_poll_interval_ms": 60_000})
    assert chosen.consumer_options["max_poll_interval_ms"] == 60_000
