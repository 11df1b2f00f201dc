"""In-process bus for embedded runs and user tests: asyncio queues, no copies, no I/O.

A group is one queue its members compete for; a broadcast subscriber (``group=None``)
has a queue of its own that gets every message published after it subscribed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..protocol import Envelope

_CLOSED = object()


@dataclass(slots=True)
class MemoryDelivery:
    message: Envelope

    async def ack(self) -> None:
        """Nothing to commit in memory."""


class MemorySubscription:
    """A group member's or a broadcast subscriber's view of its queue."""

    def __init__(self, bus: MemoryBus, queue: asyncio.Queue[object], key: tuple[str, str | None]) -> None:
        self._bus = bus
        self._queue = queue
        self._key = key
        self._closed = False

    def __aiter__(self) -> AsyncIterator[MemoryDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MemoryDelivery]:
        while not self._closed:
            item = await self._queue.get()
            if item is _CLOSED:
                # Other members of the same group may still be listening: pass it on.
                self._queue.put_nowait(_CLOSED)
                return
            assert isinstance(item, Envelope)
            yield MemoryDelivery(item)

    async def flush_acks(self) -> None:
        """Nothing to commit in memory."""

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._leave(self._key, self._queue)


class MemoryBus:
    """Each (topic, group) is one queue; a group's members compete for its messages.
    Each broadcast subscriber has its own queue."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, asyncio.Queue[object]]] = defaultdict(dict)
        self._members: dict[tuple[str, str], int] = defaultdict(int)
        self._broadcast: dict[str, list[asyncio.Queue[object]]] = defaultdict(list)
        self.published = 0

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        queues = {id(q): q for groups in self._groups.values() for q in groups.values()}
        queues.update({id(q): q for readers in self._broadcast.values() for q in readers})
        for queue in queues.values():
            queue.put_nowait(_CLOSED)
        self._groups.clear()
        self._broadcast.clear()

    async def publish(self, topic: str, message: Envelope) -> None:
        self.published += 1
        for queue in self._groups.get(topic, {}).values():
            queue.put_nowait(message)
        for queue in self._broadcast.get(topic, []):
            queue.put_nowait(message)

    async def publish_many(self, items: list[tuple[str, Envelope]]) -> None:
        for topic, message in items:
            await self.publish(topic, message)

    async def subscribe(self, topics: list[str], group: str | None) -> MemorySubscription:
        if group is None:
            own: asyncio.Queue[object] = asyncio.Queue()
            for topic in dict.fromkeys(topics):
                self._broadcast[topic].append(own)
            return MemorySubscription(self, own, ("\0".join(topics), None))
        # One queue per group shared across its topics keeps the per-task order that a
        # single Kafka partition would give.
        shared: asyncio.Queue[object] | None = None
        for topic in topics:
            shared = shared or self._groups[topic].get(group)
        queue = shared or asyncio.Queue()
        for topic in topics:
            self._groups[topic][group] = queue
            self._members[(topic, group)] += 1
        return MemorySubscription(self, queue, ("\0".join(topics), group))

    def _leave(self, key: tuple[str, str | None], queue: asyncio.Queue[object]) -> None:
        topics, group = key[0].split("\0"), key[1]
        if group is None:
            for topic in dict.fromkeys(topics):
                readers = self._broadcast.get(topic, [])
                if queue in readers:
                    readers.remove(queue)
            return
        for topic in topics:
            self._members[(topic, group)] -= 1
            if self._members[(topic, group)] <= 0:
                self._groups[topic].pop(group, None)
