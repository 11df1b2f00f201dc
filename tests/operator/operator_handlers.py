"""Handlers for the operator tests, run by real `flowkit worker` processes.

``quick`` succeeds at once; ``slow`` runs ``count`` batches of ``delay_ms`` each (time to
suspend, restart the operator, hit a deadline, delete); ``gate`` fails with code
``GateClosed`` until the file ``io.input_inline.gate`` exists (a retry then succeeds).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Quick(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        return BatchResult(success=True, metrics={"rows": 1})


class Slow(Handler):
    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        inline = input_data.get("input_inline", {})
        for i in range(int(inline.get("count", 10))):
            yield Batch(batch_uid=f"b{i:04d}", payload=inline)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await asyncio.sleep(int(batch.payload.get("delay_ms", 200)) / 1000)
        return BatchResult(success=True, metrics={"rows": 1})


class Gate(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        gate = str((batch.payload or {}).get("gate", ""))
        if gate and await asyncio.to_thread(os.path.exists, gate):
            return BatchResult(success=True, metrics={"rows": 1})
        return BatchResult(
            success=False, reason_code="GateClosed", error=f"{gate} does not exist", permanent=True
        )


HANDLERS = {"quick": Quick(), "slow": Slow(), "gate": Gate()}
