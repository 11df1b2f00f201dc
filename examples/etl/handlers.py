"""Handlers of the ETL example: one per role of ``pipeline.yaml``.

The sleeps stand in for real I/O so that the live progress has something to show.
One handler instance serves every run of its role, so per-run values live on ``ctx``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

from flowkit.worker.handlers.base import Batch, BatchResult, FinalizeResult, Handler, RunContext

COUNTRIES = ["de", "fr", "nl", "us", "gb"]


class ExtractOrders(Handler):
    """Reads orders page by page; each page becomes a partial artifact ``{"items": [...]}``."""

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        inline = input_data.get("input_inline", {})
        total, page_size = int(inline.get("orders", 40)), int(inline.get("page_size", 10))
        for page, start in enumerate(range(0, total, page_size)):
            # batch_uid is stable across re-runs: a repeated page is counted once
            yield Batch(
                batch_uid=f"page-{page}", payload={"start": start, "end": min(start + page_size, total)}
            )

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await asyncio.sleep(0.15)  # "query the source database"
        rng = random.Random(batch.payload["start"])  # deterministic fake data
        orders = [
            {"order_id": i, "country": rng.choice(COUNTRIES), "amount": round(rng.uniform(5, 250), 2)}
            for i in range(batch.payload["start"], batch.payload["end"])
        ]
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"items": orders})
        return BatchResult(success=True, metrics={"orders": len(orders)})


class TransformOrders(Handler):
    """Gets rechunked lists of orders (``payload["items"]``), normalises them, writes the result."""

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await asyncio.sleep(0.05)
        rows = [
            {"order_id": o["order_id"], "country": o["country"].upper(), "cents": round(o["amount"] * 100)}
            for o in batch.payload["items"]
        ]
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"rows": rows})
        return BatchResult(success=True, metrics={"rows": len(rows), "cents": sum(r["cents"] for r in rows)})


class LoadRows(Handler):
    """Gets one batch per transform artifact (``payload["meta"]``) and "writes" it to a warehouse."""

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        rows = batch.payload["meta"]["rows"]
        await asyncio.sleep(0.03)
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"table": "orders", "loaded": len(rows)})
        return BatchResult(success=True, metrics={"loaded": len(rows)})

    async def finalize(self, ctx: RunContext) -> FinalizeResult:
        return FinalizeResult(metrics={"tables": 1})


class FetchRates(Handler):
    """Calls an exchange-rate API that times out on the first attempt (simulated)."""

    RATES = {"USD": 1.08, "GBP": 0.86, "JPY": 162.4}

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        yield Batch(batch_uid="rates", payload=input_data.get("input_inline", {}).get("currencies", []))

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await asyncio.sleep(0.1)
        if ctx.attempt == 1:
            raise ConnectionError("rates API timed out (simulated; succeeds on retry)")
        unknown = [c for c in batch.payload if c not in self.RATES]
        if unknown:
            return BatchResult(
                success=False, reason_code="bad_currency", error=f"unknown currencies {unknown}"
            )
        rates = {c: self.RATES[c] for c in batch.payload}
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"base": "EUR", "rates": rates})
        return BatchResult(success=True, metrics={"currencies": len(rates)})


HANDLERS: dict[str, Handler] = {
    "extractor": ExtractOrders(),
    "transformer": TransformOrders(),
    "loader": LoadRows(),
    "rates": FetchRates(),
}
