"""Offset bookkeeping for one Kafka group consumer: what is acked, and one committer.

``ack()`` only records. A partition's position moves past a message once it and every
message before it on that partition are acked, so a commit never passes a message
that was not acked. One background task per subscription then commits the newest
position of every partition that moved, all in one call; acks that come while a
commit is in flight, or in the short gap after it, go into the next one. So a burst of
acks costs one broker round trip, not one each.

A rebalance first commits what was acked on the revoked partitions (bounded), then
forgets them: an ack that comes later, for a message taken before the rebalance, is
not committed, and whoever owns the partition now gets that message again (at least
once; the effects are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

COMMIT_GAP_SEC = 0.05
"""After a commit, the next waits this long (or for a flush: a rebalance, a close). A
commit costs the broker a write of the offsets log, as much as a produce; one per
message handled (a chain's node: one in the coordinator, one in the worker) made a
no-op chain's node about 1 ms slower and a 1,000-wide fan-out 10 % slower. Nothing is
lost by waiting: a crash redelivers at most this much more of the work, and every effect of a
message is idempotent."""


@dataclass
class PartitionAcks:
    """Offsets handed out on one partition (for one assignment), in order, and which are acked."""

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


class OffsetCommitter:
    """The acked positions of one consumer's partitions, committed by one background task.

    :meth:`start` after the consumer started; :meth:`close` (which flushes, bounded)
    before stopping it.
    """

    def __init__(self, consumer: AIOKafkaConsumer, group: str) -> None:
        self._consumer = consumer
        self._group = group
        self._partitions: dict[TopicPartition, PartitionAcks] = {}
        self._pending: dict[TopicPartition, int] = {}
        # Resolved once the positions now in `_pending` are committed (or given up on).
        self._next_round: asyncio.Future[None] | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"flowkit-commits-{self._group}")

    # -- bookkeeping (called by the subscription and its rebalance listener) -----------

    def delivered(self, partition: TopicPartition, offset: int) -> PartitionAcks:
        """Note that ``offset`` was handed out; its ack goes to the returned state."""
        acks = self._partitions.setdefault(partition, PartitionAcks())
        acks.delivered.append(offset)
        return acks

    def ack(self, partition: TopicPartition, acks: PartitionAcks, offset: int) -> None:
        """Record an ack; the committer commits the new position soon, without waiting here."""
        if self._partitions.get(partition) is not acks:
            log.debug(
                "group %s: ack of %s offset %d after a rebalance: not committed",
                self._group,
                partition,
                offset,
            )
            return
        position = acks.ack(offset)
        if position is None:
            return
        self._pending[partition] = position
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
        self._wake.set()

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._partitions[partition] = PartitionAcks()

    async def revoked(self, partitions: Iterable[TopicPartition], timeout: float) -> None:
        # While the group waits for us we still own them: commit what was acked so far.
        if not await self.flush(timeout):
            log.warning(
                "group %s: acks not committed within %.1fs before a rebalance: redelivered",
                self._group,
                timeout,
            )
        for partition in partitions:
            self._partitions.pop(partition, None)
            self._pending.pop(partition, None)

    # -- committing --------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything acked so far is committed, or failed to commit (then
        it is redelivered). False if ``timeout`` seconds passed first."""
        waiting = self._next_round if self._pending else self._in_flight
        if waiting is None:
            return True
        self._urgent.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            offsets, self._pending = self._pending, {}
            done, self._next_round = self._next_round, None
            if done is None:
                continue
            self._in_flight = done
            try:
                if offsets:
                    await self._commit(offsets)
            finally:
                self._in_flight = None
                if not done.done():
                    done.set_result(None)
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), COMMIT_GAP_SEC)
            self._urgent.clear()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(pos, "") for tp, pos in offsets.items()})
        except Exception as exc:
            # The group moved on (rebalance, eviction, stop) or the broker refused: the
            # next owner of those partitions gets the messages again. Never fatal here.
            where = ", ".join(f"{tp.topic}[{tp.partition}]@{pos}" for tp, pos in sorted(offsets.items()))
            log.warning("group %s: commit of %s failed (%r): will be redelivered", self._group, where, exc)

    async def close(self, timeout: float) -> None:
        """Commit what was acked (giving up after ``timeout`` seconds), then stop the task."""
        if not await self.flush(timeout):
            log.warning(
                "group %s: acks not committed within %.1fs at close (broker unreachable?): "
                "giving up, those messages will be redelivered",
                self._group,
                timeout,
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # Nobody commits any more: let a concurrent flush return.
        for waiting in (self._next_round, self._in_flight):
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
        self._next_round = self._in_flight = None
        self._pending.clear()


class CommittingListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the committer about rebalances; sets ``assigned`` once partitions are given."""

    def __init__(self, committer: OffsetCommitter, flush_timeout: float, assigned: asyncio.Event) -> None:
        self._committer = committer
        self._flush_timeout = flush_timeout
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._committer.revoked(revoked, self._flush_timeout)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._committer.assigned(assigned)
        self._assigned.set()
