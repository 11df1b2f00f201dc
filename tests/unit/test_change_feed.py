"""ChangeFeed: plain write notices are spaced out, notices with a reason go at once."""

from __future__ import annotations

import asyncio

import pytest

from flowkit.backends import feed as feed_module
from flowkit.backends.feed import ChangeFeed
from flowkit.bus.memory import MemoryBus
from flowkit.protocol import CHANGES_TOPIC, Envelope
from flowkit.store.memory import MemoryStore

pytestmark = pytest.mark.unit

DEADLINE_SEC = 5.0


async def next_notices(heard: asyncio.Queue[Envelope], count: int) -> list[tuple[str, str]]:
    notices = []
    for _ in range(count):
        message = await asyncio.wait_for(heard.get(), DEADLINE_SEC)
        notices.append((message.task_id, str(message.payload["reason"])))
    return notices


async def test_writes_after_a_send_wait_for_the_gap_and_a_reason_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gap longer than the test: anything sent before it ends was sent without waiting.
    monkeypatch.setattr(feed_module, "NOTICE_GAP_SEC", 60.0)
    bus = MemoryBus()
    heard: asyncio.Queue[Envelope] = asyncio.Queue()
    subscription = await bus.subscribe([CHANGES_TOPIC], group=None)

    async def listen() -> None:
        async for delivery in subscription:
            heard.put_nowait(delivery.message)

    listener = asyncio.create_task(listen())
    feed = ChangeFeed(MemoryStore(), bus)
    await feed.start()
    try:
        feed.written("t1")
        assert await next_notices(heard, 1) == [("t1", "")]  # the first goes at once
        for _ in range(100):
            feed.written("t1")
            feed.written("t2")
            await asyncio.sleep(0)
        feed.announce("t3", "cancel")
        # The held writes go with the cancel, one notice per task, and nothing before it.
        assert sorted(await next_notices(heard, 3)) == [("t1", ""), ("t2", ""), ("t3", "cancel")]
        assert heard.empty()
    finally:
        await feed.stop()
        await subscription.close()
        listener.cancel()
