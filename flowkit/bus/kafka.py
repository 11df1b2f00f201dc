"""The Kafka bus (aiokafka): JSON envelopes, keyed by task, committed only on ``ack()``.

Every message of a task has the task id as its key, so it lands on one partition and
keeps its order. A consumer group's members share the partitions of its topics; each
group sees every message. Offsets are committed by :meth:`KafkaDelivery.ack`, after
the caller's effect is durable, and never past a message that was not acked yet: a
message taken but not acked is delivered again after a restart or a rebalance.

A message that is not a valid envelope (not JSON, wrong schema, unknown kind, unknown
protocol version) is logged with its topic, partition and offset, copied unchanged to
the dead-letter topic with the reason in its headers, committed, and skipped: the
consumer keeps going.

Example::

    bus = KafkaBus("kafka:9092", client_id="worker-1")
    await bus.start()
    sub = await bus.subscribe(["cmd.etl.v1"], group="flowkit.workers.etl")
    async for delivery in sub:
        await handle(delivery.message)
        await delivery.ack()
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from ..protocol import (
    ANNOUNCE_TOPIC,
    DEAD_LETTER_TOPIC,
    PROTOCOL_VERSION,
    SIGNALS_TOPIC,
    STATUS_TOPIC,
    Envelope,
)

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
SECURITY_OPTIONS = frozenset(
    {
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "sasl_oauth_token_provider",
    }
)
"""Passed through unchanged to every client; never logged."""


class MalformedMessage(ValueError):
    """A record that is not a valid envelope; the text is the dead-letter reason."""


def decode_envelope(value: bytes | None) -> Envelope:
    """Parse one record's value, or raise :class:`MalformedMessage` saying why not."""
    if value is None:
        raise MalformedMessage("empty message (no value)")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"not a JSON object (got {type(data).__name__})")
    if "v" not in data:
        raise MalformedMessage("no protocol version field 'v'")
    if data["v"] != PROTOCOL_VERSION:
        raise MalformedMessage(f"unknown protocol version v={data['v']!r} (this is v{PROTOCOL_VERSION})")
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise MalformedMessage(f"wrong schema: {problems}") from None


@dataclass(slots=True)
class KafkaDelivery:
    """One envelope taken from a partition; ``ack()`` commits past it."""

    message: Envelope
    _subscription: KafkaSubscription
    _partition: TopicPartition
    _offset: int

    async def ack(self) -> None:
        await self._subscription._ack(self._partition, self._offset)


@dataclass
class _PartitionAcks:
    """Offsets handed out on one partition, in order, and which of them are acked."""

    delivered: deque[int] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)

    def ack(self, offset: int) -> int | None:
        """Mark ``offset`` done; return the new commit position if it moved."""
        self.acked.add(offset)
        position = None
        while self.delivered and self.delivered[0] in self.acked:
            done = self.delivered.popleft()
            self.acked.discard(done)
            position = done + 1
        return position


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Acks still to come for these partitions cannot be committed by us any more:
        # the next owner gets those messages again (at least once).
        for partition in revoked:
            self._subscription._partitions.pop(partition, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for partition in assigned:
            self._subscription._partitions[partition] = _PartitionAcks()
        self._subscription._assigned.set()


class KafkaSubscription:
    """One consumer in one group. Iterate for deliveries; ``close()`` leaves the group."""

    def __init__(self, bus: KafkaBus, consumer: AIOKafkaConsumer, group: str) -> None:
        self._bus = bus
        self._consumer = consumer
        self._group = group
        self._partitions: dict[TopicPartition, _PartitionAcks] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._assigned = asyncio.Event()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[KafkaDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KafkaDelivery]:
        while not self._closed:
            try:
                record = await self._consumer.getone()
            except ConsumerStoppedError:
                return
            partition = TopicPartition(record.topic, record.partition)
            acks = self._partitions.setdefault(partition, _PartitionAcks())
            acks.delivered.append(record.offset)
            try:
                message = decode_envelope(record.value)
            except MalformedMessage as exc:
                await self._set_aside(record, str(exc))
                continue
            yield KafkaDelivery(message, self, partition, record.offset)

    async def _set_aside(self, record: Any, reason: str) -> None:
        log.warning(
            "malformed message on %s partition %d offset %d (group %s): %s; sent to dead letters",
            record.topic,
            record.partition,
            record.offset,
            self._group,
            reason,
        )
        try:
            await self._bus._dead_letter(record, reason)
        except Exception:
            # Not committed: it comes back after a restart rather than being lost.
            where = (record.topic, record.partition, record.offset)
            log.exception("could not dead-letter %s partition %d offset %d", *where)
            return
        await self._ack(TopicPartition(record.topic, record.partition), record.offset)

    async def _ack(self, partition: TopicPartition, offset: int) -> None:
        acks = self._partitions.get(partition)
        if acks is None or offset not in acks.delivered:
            log.debug("ack of %s offset %d after a rebalance: not committed", partition, offset)
            return
        position = acks.ack(offset)
        if position is None:
            return
        async with self._commit_lock:
            if position <= self._committed.get(partition, -1) or self._partitions.get(partition) is not acks:
                return
            try:
                await self._consumer.commit({partition: OffsetAndMetadata(position, "")})
            except KafkaError as exc:
                # The group moved on (rebalance, stop): whoever owns the partition now
                # gets the message again; the effects are idempotent.
                log.warning("commit of %s at %d failed (%s): will be redelivered", partition, position, exc)
                return
            self._committed[partition] = position

    async def wait_assigned(self, timeout: float) -> None:
        """Wait until the group has given this consumer its partitions (maybe none)."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def close(self) -> None:
        """Leave the group. Deliveries not acked yet are redelivered to the group. Safe twice."""
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        await self._consumer.stop()


class KafkaBus:
    """The :class:`~flowkit.bus.base.Bus` on Kafka.

    ``namespace`` prefixes every topic and group name (several FlowKit installations,
    or tests, on one cluster). Topics are created when missing, with ``partitions``
    partitions: the protocol's fixed topics at :meth:`start`, others on first use.
    Security settings (``security_protocol``, ``ssl_context``, ``sasl_*``) are passed
    to every client and never logged. ``consumer_options``/``producer_options`` go to
    aiokafka as they are (e.g. ``heartbeat_interval_ms``).
    """

    def __init__(
        self,
        bootstrap: str | list[str],
        *,
        client_id: str = "flowkit",
        namespace: str = "",
        partitions: int = 4,
        replication_factor: int = 1,
        auto_offset_reset: str = "earliest",
        assign_timeout: float = 30.0,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
        **security: Any,
    ) -> None:
        unknown = set(security) - SECURITY_OPTIONS
        if unknown:
            known = sorted(SECURITY_OPTIONS)
            raise TypeError(f"KafkaBus: unknown option(s) {sorted(unknown)}; security options are {known}")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.namespace = namespace
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.auto_offset_reset = auto_offset_reset
        self.assign_timeout = assign_timeout
        self._consumer_options = dict(consumer_options or {})
        self._producer_options = dict(producer_options or {})
        self._security = dict(security)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._topics: set[str] = set()
        self._topics_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KafkaBus({self.bootstrap!r}, client_id={self.client_id!r}, namespace={self.namespace!r})"

    def topic_name(self, topic: str) -> str:
        """The Kafka topic (or group) name of a logical name: ``namespace + name``."""
        return self.namespace + topic

    def _clients(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id, **self._security}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect the producer and the admin client, create the protocol's topics."""
        if self._producer is not None:
            raise RuntimeError(
                f"{self!r} is already started: a KafkaBus has one owner that starts and stops it; "
                "give the coordinator and each worker a KafkaBus of their own"
            )
        admin = AIOKafkaAdminClient(**self._clients())
        producer = AIOKafkaProducer(
            **self._clients(), acks="all", enable_idempotence=True, **self._producer_options
        )
        try:
            await admin.start()
            await producer.start()
            self._admin, self._producer = admin, producer
            await self._ensure_topics([STATUS_TOPIC, SIGNALS_TOPIC, ANNOUNCE_TOPIC, DEAD_LETTER_TOPIC])
        except BaseException:
            self._admin = self._producer = None
            await producer.stop()
            await admin.close()
            raise
        log.info("kafka bus %s started", self.client_id)

    async def stop(self) -> None:
        """Close every subscription, then the producer (flushing), then the admin client."""
        for sub in list(self._subscriptions):
            await sub.close()
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self!r} is not started: call `await bus.start()` first")
        return self._producer

    # -- topics --------------------------------------------------------------------

    async def _ensure_topics(self, topics: Iterable[str]) -> list[str]:
        names = [self.topic_name(t) for t in topics]
        missing = [n for n in dict.fromkeys(names) if n not in self._topics]
        if not missing:
            return names
        assert self._admin is not None
        async with self._topics_lock:
            missing = [n for n in missing if n not in self._topics]
            if missing:
                new = [NewTopic(n, self.partitions, self.replication_factor) for n in missing]
                response = await self._admin.create_topics(new)
                for topic, code, *rest in response.topic_errors:
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        detail = rest[0] if rest and rest[0] else f"error code {code}"
                        raise KafkaError(f"could not create topic '{topic}': {detail}")
                self._topics.update(missing)
        return names

    # -- messages ------------------------------------------------------------------

    async def publish(self, topic: str, message: Envelope) -> None:
        """Send ``message`` as JSON, keyed by its task id; returns once all replicas have it."""
        producer = self._started()
        (name,) = await self._ensure_topics([topic])
        key = message.key()
        await producer.send_and_wait(
            name, value=message.model_dump_json().encode(), key=key.encode() if key else None
        )

    async def subscribe(self, topics: list[str], group: str) -> KafkaSubscription:
        """Join ``group`` on ``topics``; returns once the group has assigned partitions."""
        self._started()
        names = await self._ensure_topics(topics)
        consumer = AIOKafkaConsumer(
            **self._clients(),
            group_id=self.topic_name(group),
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            **self._consumer_options,
        )
        sub = KafkaSubscription(self, consumer, self.topic_name(group))
        consumer.subscribe(names, listener=_Rebalance(sub))
        await consumer.start()
        self._subscriptions.add(sub)
        try:
            await sub.wait_assigned(self.assign_timeout)
        except BaseException:
            await sub.close()
            raise
        return sub

    async def _dead_letter(self, record: Any, reason: str) -> None:
        (name,) = await self._ensure_topics([DEAD_LETTER_TOPIC])
        headers = [
            ("flowkit-error", reason.encode()),
            ("flowkit-source-topic", record.topic.encode()),
            ("flowkit-source-partition", str(record.partition).encode()),
            ("flowkit-source-offset", str(record.offset).encode()),
        ]
        await self._started().send_and_wait(name, value=record.value, key=record.key, headers=headers)
