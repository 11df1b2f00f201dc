"""Handlers for the fault tests: a slow streaming source and a sink that reads it.

``source`` yields ``count`` batches (``io.input_inline``), each taking ``delay_ms``, writing
one artifact of ``per_batch`` items and saving a checkpoint; ``sink`` streams them back
(``pull.from_artifacts``) and counts the items. Exact totals prove exactly-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class SlowSource(Handler):
    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        inline = input_data.get("input_inline", {})
        for i in range(int(inline.get("count", 10))):
            yield Batch(batch_uid=f"b{i:04d}", payload={"i": i, **inline})

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await asyncio.sleep(int(batch.payload.get("delay_ms", 50)) / 1000)
        per_batch = int(batch.payload.get("per_batch", 2))
        items = [batch.payload["i"] * per_batch + k for k in range(per_batch)]
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"items": items})
        await ctx.save_checkpoint({"last": batch.batch_uid})
        return BatchResult(success=True, metrics={"rows": len(items)})


class Sink(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        items = batch.payload.get("meta", {}).get("items", [])
        return BatchResult(success=True, metrics={"rows": len(items), "total": sum(items)})


HANDLERS = {"source": SlowSource(), "sink": Sink()}


def streaming_graph(count: int, delay_ms: int, per_batch: int = 2) -> dict[str, Any]:
    """source (count batches) -> sink streaming behind it."""
    return {
        "nodes": [
            {
                "node_id": "source",
                "type": "source",
                "io": {"input_inline": {"count": count, "delay_ms": delay_ms, "per_batch": per_batch}},
            },
            {
                "node_id": "sink",
                "type": "sink",
                "depends_on": ["source"],
                "io": {
                    "start_when": "first_batch",
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_nodes": ["source"], "poll_ms": 200},
                    },
                },
            },
        ]
    }
