"""The benchmark shapes (handlers and graphs), run on any runtime with LocalRuntime's interface."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from flowkit.states import TaskStatus
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Runtime(Protocol):
    async def __aenter__(self) -> Runtime: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def run(self, graph: Mapping[str, Any]) -> TaskStatus: ...


RuntimeFactory = Callable[[dict[str, Handler]], Runtime]


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


async def _timed(make: RuntimeFactory, handlers: dict[str, Handler], graph: dict[str, Any]) -> float:
    async with make(handlers) as runtime:
        started = time.perf_counter()
        status = await runtime.run(graph)
        elapsed = time.perf_counter() - started
    if not status.finished:
        raise RuntimeError(f"benchmark task ended {status.status.value}")
    return elapsed


async def chain(make: RuntimeFactory, nodes: int) -> float:
    """Milliseconds of overhead per node on a chain of no-op nodes."""
    graph = {
        "nodes": [
            {"node_id": f"n{i}", "type": "noop", **({"depends_on": [f"n{i - 1}"]} if i else {})}
            for i in range(nodes)
        ]
    }
    return await _timed(make, {"noop": Noop()}, graph) * 1000 / nodes


async def fan(make: RuntimeFactory, width: int) -> float:
    """Nodes per second through a fan-out of ``width`` no-op nodes and a fan-in."""
    middle = [f"w{i}" for i in range(width)]
    graph = {
        "nodes": [
            {"node_id": "root", "type": "noop"},
            *({"node_id": m, "type": "noop", "depends_on": ["root"]} for m in middle),
            {"node_id": "sink", "type": "noop", "depends_on": middle},
        ]
    }
    return (width + 2) / await _timed(make, {"noop": Noop()}, graph)


def streaming_graph(batches: int) -> dict[str, Any]:
    """s1 writes ``batches`` artifacts; s2 and s3 each stream their upstream's (``first_batch``)."""

    def follows(upstream: str) -> dict[str, Any]:
        return {
            "start_when": "first_batch",
            "input_inline": {
                "input_adapter": "pull.from_artifacts",
                "input_args": {"from_nodes": [upstream]},
            },
        }

    return {
        "nodes": [
            {"node_id": "s1", "type": "source", "io": {"input_inline": {"batches": batches}}},
            {"node_id": "s2", "type": "forward", "depends_on": ["s1"], "io": follows("s1")},
            {"node_id": "s3", "type": "forward", "depends_on": ["s2"], "io": follows("s2")},
        ]
    }


async def streaming(make: RuntimeFactory, batches: int) -> float:
    """Batches per second through a 3-stage ``first_batch`` pipeline."""
    return batches / await _timed(make, {"source": Source(), "forward": Forward()}, streaming_graph(batches))
