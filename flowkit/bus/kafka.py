"""The Kafka bus (aiokafka): JSON envelopes, keyed by task, committed only on ``ack()``.

Every message of a task has the task id as its key, so it lands on one partition and
keeps its order. A consumer group's members share the partitions of its topics; each
group sees every message. Offsets are committed after :meth:`KafkaDelivery.ack`, once
the caller's effect is durable, and never past a message that was not acked yet: a
message taken but not acked is delivered again after a restart or a rebalance. Acks
are coalesced: ``ack()`` only records, one committer task per subscription commits
everything acked since its last commit in one call (see :mod:`.kafka_acks`).

A broadcast subscription (``group=None``) is no group member: it reads every partition
of its topics from the end as it was when :meth:`KafkaBus.subscribe` returned, so it
sees exactly what is published afterwards, and commits nothing (``ack()`` does
nothing). For change feeds, cancel signals and announcements, where replaying
history would be wrong. Partitions added later are not followed.

A message that is not a valid envelope (not JSON, wrong schema, unknown kind, unknown
protocol version) is logged with its topic, partition and offset, copied unchanged to
the dead-letter topic with the reason in its headers, committed, and skipped: the
consumer keeps going. A broadcast reader dead-letters it too (the status topic is read
by every coordinator as broadcast, and its bad messages must be kept): N readers make
up to N copies, which carry the same source topic, partition and offset headers.

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
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError
from pydantic import ValidationError

from ..protocol import (
    ANNOUNCE_TOPIC,
    DEAD_LETTER_TOPIC,
    PROTOCOL_VERSION,
    SIGNALS_TOPIC,
    STATUS_TOPIC,
    Envelope,
)
from .kafka_acks import CommittingListener, OffsetCommitter, PartitionAcks
from .kafka_logs import quiet_retried_leader_changes

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
TOPIC_METADATA_TIMEOUT_SEC = 10.0
TOPIC_METADATA_POLL_SEC = 0.05
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

# A member whose handlers keep all its slots busy stops calling getone(); with aiokafka's
# default (5 min) it would then leave the group and set off a rebalance storm. Whether a
# member is alive is judged by its heartbeats (session_timeout_ms), and a handler that
# is stuck is caught by FlowKit's own run leases, so the poll interval is no signal here.
MAX_POLL_INTERVAL_MS = 24 * 3600 * 1000
READ_RETRY_MIN, READ_RETRY_MAX = 0.1, 5.0
"""Seconds between attempts to read again after a failed getone() (doubling)."""


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
    """One envelope taken from a partition; ``ack()`` lets the commit move past it."""

    message: Envelope
    _subscription: KafkaSubscription
    _partition: TopicPartition
    _offset: int
    _acks: PartitionAcks | None  # None on a broadcast subscription: nothing to commit

    async def ack(self) -> None:
        """Record the ack and return; the subscription's committer commits it soon."""
        self._subscription._ack(self._partition, self._acks, self._offset)


class KafkaSubscription:
    """One consumer: a member of a group, or a broadcast reader (``group`` None) that
    sees everything published after it subscribed and commits nothing. Iterate for
    deliveries; ``close()`` leaves the group."""

    def __init__(
        self, bus: KafkaBus, consumer: AIOKafkaConsumer, group: str | None, flush_timeout: float
    ) -> None:
        self._bus = bus
        self._consumer = consumer
        self._group = group
        self._flush_timeout = flush_timeout
        self._committer = OffsetCommitter(consumer, group) if group is not None else None
        if self._committer is not None:
            self._committer.start()  # stopped by close(), which subscribe() calls on failure
        self._assigned = asyncio.Event()
        self._closed = False

    @property
    def _name(self) -> str:
        return self._group if self._group is not None else "(broadcast)"

    def __aiter__(self) -> AsyncIterator[KafkaDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KafkaDelivery]:
        backoff = READ_RETRY_MIN
        while not self._closed:
            try:
                record = await self._consumer.getone()
            except ConsumerStoppedError:
                return
            except Exception as exc:
                if self._closed:
                    return
                # A broker restart or a coordinator error: aiokafka reconnects, keep reading.
                log.warning("reading for %s failed (%r): retrying in %.1fs", self._name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, READ_RETRY_MAX)
                continue
            backoff = READ_RETRY_MIN
            partition = TopicPartition(record.topic, record.partition)
            acks = self._committer.delivered(partition, record.offset) if self._committer else None
            try:
                message = decode_envelope(record.value)
            except MalformedMessage as exc:
                await self._set_aside(record, acks, str(exc))
                continue
            yield KafkaDelivery(message, self, partition, record.offset, acks)

    async def _set_aside(self, record: Any, acks: PartitionAcks | None, reason: str) -> None:
        log.warning(
            "malformed message on %s partition %d offset %d (%s): %s; %s",
            record.topic,
            record.partition,
            record.offset,
            self._name,
            reason,
            "sent to dead letters",
        )
        try:
            await self._bus._dead_letter(record, reason)
        except Exception:
            # Not committed: it comes back after a restart rather than being lost.
            where = (record.topic, record.partition, record.offset)
            log.exception("could not dead-letter %s partition %d offset %d", *where)
            return
        self._ack(TopicPartition(record.topic, record.partition), acks, record.offset)

    def _ack(self, partition: TopicPartition, acks: PartitionAcks | None, offset: int) -> None:
        if self._committer is None or acks is None:
            return
        if self._closed:
            log.debug("%s: ack of %s offset %d after close: not committed", self._name, partition, offset)
            return
        self._committer.ack(partition, acks, offset)

    async def flush_acks(self) -> None:
        """Wait until everything acked so far is committed (or failed to commit: then it
        is redelivered, at least once). Returns at once on a broadcast subscription."""
        if self._committer is not None:
            await self._committer.flush()

    async def wait_assigned(self, timeout: float) -> None:
        """Wait until the group has given this consumer its partitions (maybe none)."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def close(self) -> None:
        """Commit what was acked (bounded), then leave the group. Deliveries not acked
        are redelivered to the group. Safe twice."""
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        try:
            if self._committer is not None:
                await self._committer.close(self._flush_timeout)
        finally:
            await self._consumer.stop()


class KafkaBus:
    """The :class:`~flowkit.bus.base.Bus` on Kafka.

    ``namespace`` prefixes every topic and group name (several FlowKit installations,
    or tests, on one cluster). Topics are created when missing, with ``partitions``
    partitions: the protocol's fixed topics at :meth:`start`, others on first use.
    Security settings (``security_protocol``, ``ssl_context``, ``sasl_*``) are passed
    to every client and never logged. ``consumer_options``/``producer_options`` go to
    aiokafka as they are (e.g. ``heartbeat_interval_ms``); ``max_poll_interval_ms``
    defaults to 24 h (see :data:`MAX_POLL_INTERVAL_MS`). Closing a subscription waits
    up to ``flush_timeout`` seconds for its acks to be committed, then gives up (they
    are redelivered): a broker that is gone never hangs a shutdown.
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
        flush_timeout: float = 5.0,
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
        self.flush_timeout = flush_timeout
        self.consumer_options: dict[str, Any] = {
            "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
            **(consumer_options or {}),
        }
        """What every consumer gets on top of the bus's own settings."""
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
        quiet_retried_leader_changes()
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
        """Close every subscription (committing what was acked), then the producer
        (flushing), then the admin client. Safe twice."""
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
                await self._until_known(missing)
                self._topics.update(missing)
        return names

    async def _until_known(self, topics: list[str]) -> None:
        """Return once the broker's metadata has every topic with a leader for each
        partition: a client that asks about a topic created a moment ago is told it does
        not exist, and aiokafka logs that as an error ("not found in cluster metadata")."""
        assert self._admin is not None
        deadline = time.monotonic() + TOPIC_METADATA_TIMEOUT_SEC
        pending = set(topics)
        while pending:
            for topic in await self._admin.describe_topics(sorted(pending)):
                partitions = topic.get("partitions") or []
                if topic.get("error_code") == 0 and partitions and all(p["leader"] >= 0 for p in partitions):
                    pending.discard(topic["topic"])
            if pending and time.monotonic() > deadline:
                log.warning(
                    "topics %s still without leaders after %.0fs", sorted(pending), TOPIC_METADATA_TIMEOUT_SEC
                )
                return
            if pending:
                await asyncio.sleep(TOPIC_METADATA_POLL_SEC)

    # -- messages ------------------------------------------------------------------

    async def publish(self, topic: str, message: Envelope) -> None:
        """Send ``message`` as JSON, keyed by its task id; returns once all replicas have it."""
        await self.publish_many([(topic, message)])

    async def publish_many(self, items: list[tuple[str, Envelope]]) -> None:
        """Send every ``(topic, message)`` without waiting in between, then wait for all:
        N messages cost about one round trip. Order per key is kept; raises the first
        failure once every send is settled (the others may have been delivered)."""
        if not items:
            return
        producer = self._started()
        names = await self._ensure_topics([topic for topic, _ in items])
        futures: list[asyncio.Future[Any]] = []
        try:
            for name, (_, message) in zip(names, items, strict=True):
                key = message.key()
                value = message.model_dump_json().encode()
                futures.append(await producer.send(name, value=value, key=key.encode() if key else None))
        finally:
            # Also when a send failed: settle those already under way before raising.
            results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def subscribe(self, topics: list[str], group: str | None) -> KafkaSubscription:
        """Join ``group`` on ``topics``, returning once the group has assigned partitions;
        or, with ``group=None``, read every partition from its current end, returning
        once those positions are known (so nothing published afterwards is missed)."""
        self._started()
        names = await self._ensure_topics(topics)
        if group is None:
            consumer = AIOKafkaConsumer(
                **self._clients(),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                **self.consumer_options,
            )
        else:
            consumer = AIOKafkaConsumer(
                **self._clients(),
                group_id=self.topic_name(group),
                enable_auto_commit=False,
                auto_offset_reset=self.auto_offset_reset,
                **self.consumer_options,
            )
        sub = KafkaSubscription(
            self, consumer, None if group is None else self.topic_name(group), self.flush_timeout
        )
        self._subscriptions.add(sub)
        try:
            if sub._committer is None:
                await self._read_from_end(consumer, names)
            else:
                listener = CommittingListener(sub._committer, self.flush_timeout, sub._assigned)
                consumer.subscribe(names, listener=listener)
                await consumer.start()
                await sub.wait_assigned(self.assign_timeout)
        except BaseException:
            await sub.close()
            raise
        return sub

    async def _read_from_end(self, consumer: AIOKafkaConsumer, names: list[str]) -> None:
        partitions = [
            TopicPartition(name, p)
            for name in dict.fromkeys(names)
            for p in sorted(await self._started().partitions_for(name))
        ]
        consumer.assign(partitions)
        await consumer.start()
        await consumer.seek_to_end(*partitions)
        # Resolve every position now: a message published once subscribe() returned is
        # at or past it, so it is seen.
        for partition in partitions:
            await asyncio.wait_for(consumer.position(partition), self.assign_timeout)

    async def _dead_letter(self, record: Any, reason: str) -> None:
        (name,) = await self._ensure_topics([DEAD_LETTER_TOPIC])
        headers = [
            ("flowkit-error", reason.encode()),
            ("flowkit-source-topic", record.topic.encode()),
            ("flowkit-source-partition", str(record.partition).encode()),
            ("flowkit-source-offset", str(record.offset).encode()),
        ]
        await self._started().send_and_wait(name, value=record.value, key=record.key, headers=headers)
