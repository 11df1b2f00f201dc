"""One contract per interface, run against the in-memory and the real implementation.

The `bus` and `store` fixtures are parametrized: `memory` (marked unit, no services)
and the real ones (marked integration: Kafka, and MongoDB protocol through pymongo's
async client and through motor), so the two implementations can never drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from flowkit.bus.base import Bus, Delivery, Subscription
from flowkit.bus.memory import MemoryBus
from flowkit.store.base import Store
from flowkit.store.memory import MemoryStore

# Short heartbeats: a member joining the group is noticed in well under a second.
GROUP_TIMINGS = {"heartbeat_interval_ms": 100, "session_timeout_ms": 6000}


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Collector:
    """Reads a subscription in the background; acks what `ack` allows."""

    sub: Subscription
    ack: Callable[[Delivery], bool] = lambda _: True
    received: list[Delivery] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for delivery in self.sub:
            self.received.append(delivery)
            if self.ack(delivery):
                await delivery.ack()
            await asyncio.sleep(0)  # a member's work takes a turn: others may take messages meanwhile

    def start(self) -> Collector:
        self.task = asyncio.create_task(self._run())
        return self

    @property
    def payloads(self) -> list[Any]:
        return [d.message.payload for d in self.received]

    async def close(self) -> None:
        await self.sub.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class BusKit:
    """A started bus, and a way to make more on the same backend (another process)."""

    bus: Bus
    new_bus: Callable[[], Awaitable[Bus]]
    real: bool
    collectors: list[Collector] = field(default_factory=list)

    async def collect(
        self,
        bus: Bus,
        topics: list[str],
        group: str | None,
        ack: Callable[[Delivery], bool] = lambda _: True,
    ) -> Collector:
        """Subscribe (``group=None``: broadcast) and read in the background until teardown."""
        return self.read(await bus.subscribe(topics, group), ack)

    def read(self, sub: Subscription, ack: Callable[[Delivery], bool] = lambda _: True) -> Collector:
        """Read an existing subscription in the background until teardown."""
        collector = Collector(sub, ack).start()
        self.collectors.append(collector)
        return collector


def kafka_bus(bootstrap: str, namespace: str) -> Any:
    from flowkit.bus.kafka import KafkaBus

    return KafkaBus(bootstrap, client_id="contract", namespace=namespace, consumer_options=GROUP_TIMINGS)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("kafka", marks=pytest.mark.integration),
    ]
)
async def bus_kit(request: pytest.FixtureRequest) -> AsyncIterator[BusKit]:
    started: list[Bus] = []

    if request.param == "memory":
        shared = MemoryBus()

        async def new_bus() -> Bus:
            return shared  # one process: everyone shares the in-process bus

    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        prefix = request.getfixturevalue("kafka_topic_prefix")

        async def new_bus() -> Bus:
            bus = kafka_bus(bootstrap, prefix)
            await bus.start()
            started.append(bus)
            return bus

    if request.param == "memory":
        await shared.start()
        started.append(shared)
    kit = BusKit(await new_bus(), new_bus, real=request.param != "memory")
    try:
        yield kit
    finally:
        await _close(kit, started)


async def _close(kit: BusKit, started: list[Bus]) -> None:
    for collector in kit.collectors:
        await collector.close()
    for bus in started:
        await bus.stop()


@pytest.fixture
async def kafka_kit(kafka_bootstrap: str, kafka_topic_prefix: str) -> AsyncIterator[BusKit]:
    """The real bus alone, for what the in-memory bus cannot express (offsets, bytes)."""
    started: list[Bus] = []

    async def new_bus() -> Bus:
        bus = kafka_bus(kafka_bootstrap, kafka_topic_prefix)
        await bus.start()
        started.append(bus)
        return bus

    kit = BusKit(await new_bus(), new_bus, real=True)
    try:
        yield kit
    finally:
        await _close(kit, started)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("pymongo", marks=pytest.mark.integration),
        pytest.param("motor", marks=pytest.mark.integration),
    ]
)
def store_db(request: pytest.FixtureRequest) -> Any:
    """None for the in-memory store, else a fresh database on the named client."""
    if request.param == "memory":
        return None
    return request.getfixturevalue("mongo_db" if request.param == "pymongo" else "motor_db")


@pytest.fixture
async def store(store_db: Any) -> Store:
    if store_db is None:
        return MemoryStore()
    from flowkit.store.mongo import MongoStore

    mongo = MongoStore(store_db)
    await mongo.ensure_indexes()
    return mongo


@pytest.fixture
def peer(store: Store, store_db: Any) -> Store:
    """The same backend as another process sees it (in memory: the one shared store)."""
    if store_db is None:
        return store
    from flowkit.store.mongo import MongoStore

    return MongoStore(store_db)
