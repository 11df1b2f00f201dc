"""Handlers written from the seed docs' API, and a deadline-bound wait, for engine tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext

TIMEOUT = 5.0


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.002)


async def wait_event(event: asyncio.Event, timeout: float = TIMEOUT) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"event not set within {timeout}s") from None


class Source(Handler):
    """``count`` batches; each writes an artifact ``{"items": [...]}`` of ``per_batch`` numbers."""

    def __init__(self, count: int = 3, per_batch: int = 2) -> None:
        self.count = count
        self.per_batch = per_batch

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(self.count):
            yield Batch(batch_uid=f"b{i}", payload={"i": i})

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        start = batch.payload["i"] * self.per_batch
        items = list(range(start, start + self.per_batch))
        ref = await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"items": items})
        return BatchResult(success=True, metrics={"rows": len(items)}, artifacts_ref=ref)


class Recorder(Handler):
    """Records every batch it processes, per node, in order."""

    def __init__(self) -> None:
        self.batches: dict[str, list[Batch]] = {}

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.batches.setdefault(ctx.node_id, []).append(batch)
        return BatchResult(success=True, metrics={"seen": 1})

    def uids(self, node_id: str) -> list[str]:
        return [b.batch_uid for b in self.batches.get(node_id, [])]
