"""The message bus interface. Kafka and the in-process bus implement it alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..protocol import Envelope


class Delivery(Protocol):
    """A received message. ``ack()`` once its effect is durable (commits the offset)."""

    message: Envelope

    async def ack(self) -> None: ...


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    """Topics with consumer groups: members of one group share the messages,
    every group sees every message."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, message: Envelope) -> None: ...

    async def subscribe(self, topics: list[str], group: str) -> Subscription: ...
