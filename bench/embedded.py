"""Embedded-mode overhead: the three scenarios of the performance contract (DESIGN.md).

    .venv/bin/python bench/embedded.py [--repeat 5]

Each scenario runs ``--repeat`` times in a fresh LocalRuntime; the median is printed
with the spread. Handlers do nothing, so the figures are FlowKit's own overhead
(validation, scheduling, bus, store, worker runtime), create_task to the end.
This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from flowkit import LocalRuntime
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Noop(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        return BatchResult()


class Source(Handler):
    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(input_data["input_inline"]["batches"]):
            yield Batch(batch_uid=str(i), payload=i)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"i": batch.payload})
        return BatchResult()


class Forward(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, batch.payload["meta"])
        return BatchResult()


async def _timed(handlers: dict[str, Handler], graph: dict[str, Any]) -> float:
    async with LocalRuntime(handlers) as runtime:
        started = time.perf_counter()
        status = await runtime.run(graph)
        elapsed = time.perf_counter() - started
    if not status.finished:
        raise RuntimeError(f"benchmark task ended {status.status.value}")
    return elapsed


async def chain(nodes: int) -> float:
    """Milliseconds of overhead per node on a chain of no-op nodes."""
    graph = {
        "nodes": [
            {"node_id": f"n{i}", "type": "noop", **({"depends_on": [f"n{i - 1}"]} if i else {})}
            for i in range(nodes)
        ]
    }
    return await _timed({"noop": Noop()}, graph) * 1000 / nodes


async def fan(width: int) -> float:
    """Nodes per second through a fan-out of ``width`` no-op nodes and a fan-in."""
    middle = [f"w{i}" for i in range(width)]
    graph = {
        "nodes": [
            {"node_id": "root", "type": "noop"},
            *({"node_id": m, "type": "noop", "depends_on": ["root"]} for m in middle),
            {"node_id": "sink", "type": "noop", "depends_on": middle},
        ]
    }
    return (width + 2) / await _timed({"noop": Noop()}, graph)


async def streaming(batches: int) -> float:
    """Batches per second through a 3-stage ``first_batch`` pipeline."""

    def follows(upstream: str) -> dict[str, Any]:
        return {
            "start_when": "first_batch",
            "input_inline": {
                "input_adapter": "pull.from_artifacts",
                "input_args": {"from_nodes": [upstream]},
            },
        }

    graph = {
        "nodes": [
            {"node_id": "s1", "type": "source", "io": {"input_inline": {"batches": batches}}},
            {"node_id": "s2", "type": "forward", "depends_on": ["s1"], "io": follows("s1")},
            {"node_id": "s3", "type": "forward", "depends_on": ["s2"], "io": follows("s2")},
        ]
    }
    return batches / await _timed({"source": Source(), "forward": Forward()}, graph)


SCENARIOS: list[tuple[str, str, str, Callable[[], Awaitable[float]]]] = [
    ("chain of 1,000 no-op nodes", "ms/node", "<= 0.2", lambda: chain(1000)),
    ("1,000-wide fan-out + fan-in", "nodes/s", ">= 20,000", lambda: fan(1000)),
    ("3-stage first_batch pipeline, 10,000 batches", "batches/s", ">= 5,000", lambda: streaming(10_000)),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'scenario':48} {'median':>10} {'min..max':>21}  unit       target")
    for name, unit, target, scenario in SCENARIOS:
        figures = [asyncio.run(scenario()) for _ in range(args.repeat)]
        spread = f"{min(figures):,.3f}..{max(figures):,.3f}"
        print(f"{name:48} {statistics.median(figures):>10,.3f} {spread:>21}  {unit:10} {target}", flush=True)


if __name__ == "__main__":
    main()
