"""The message bus interface. Kafka and the in-process bus implement it alike.

Two ways to subscribe: as a member of a consumer group (members of one group share the
messages, at least once, each acked when its effect is durable), or as a broadcast
reader (``group=None``) that sees every message published after it subscribed and
never replays history: for change feeds, cancel signals and announcements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..protocol import Envelope


class Delivery(Protocol):
    """A received message. ``ack()`` once its effect is durable.

    On a group subscription an ack lets the group's committed position move past the
    message (never past one not acked yet); it returns without waiting for the broker.
    On a broadcast subscription it does nothing.
    """

    message: Envelope

    async def ack(self) -> None: ...


class Subscription(Protocol):
    """What :meth:`Bus.subscribe` returns: iterate it for deliveries, then close it."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def flush_acks(self) -> None:
        """Wait until every ack made so far is committed (nothing to wait for on a
        broadcast subscription or in memory)."""
        ...

    async def close(self) -> None:
        """Commit what was acked (bounded in time), then stop. Deliveries not acked are
        given to the group again. Safe to call twice."""
        ...


class Bus(Protocol):
    """Topics with consumer groups: members of one group share the messages,
    every group sees every message, and so does every broadcast subscriber.

    Example::

        sub = await bus.subscribe(["cmd.etl.v1"], group="flowkit.workers.etl")
        signals = await bus.subscribe(["signals.v1"], group=None)  # from now on, all of them
        await bus.publish_many([("cmd.etl.v1", a), ("cmd.etl.v1", b)])
    """

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Close every subscription, then the connections. Safe to call twice."""
        ...

    async def publish(self, topic: str, message: Envelope) -> None:
        """Send one message; returns once the bus has it durably."""
        ...

    async def publish_many(self, items: list[tuple[str, Envelope]]) -> None:
        """Send every ``(topic, message)`` together, returning once the bus has them all.

        Cheaper than a ``publish`` each (about one round trip for all); messages of one
        key keep the order they have in ``items``.
        """
        ...

    async def subscribe(self, topics: list[str], group: str | None) -> Subscription:
        """Read ``topics`` as a member of ``group``, or with ``group=None`` as a broadcast
        reader: no group, nothing committed, every message published after this returns
        and nothing from before."""
        ...
