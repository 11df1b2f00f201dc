"""The benchmark shapes: handlers, graphs, and the figures read from a finished task.

Every runtime (embedded, distributed processes) runs these same graphs; what each
shape reports is computed here from the task's final status, so the two runtimes are
measured the same way. Node timestamps are the coordinator's (``started_at`` is when
it heard the node was accepted by a worker; ``finished_at`` when it heard it ended).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncIterator
from typing import Any

from flowkit.states import TaskStatus
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Noop(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        return BatchResult()


class Source(Handler):
    """Writes ``input_inline.batches`` artifacts of one item each."""

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(input_data["input_inline"]["batches"]):
            yield Batch(batch_uid=str(i), payload=i)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"items": [batch.payload]})
        return BatchResult()


class Forward(Handler):
    """Writes what it read (a ``pull.from_artifacts`` or a rechunked batch) as its artifact."""

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        payload = batch.payload
        meta = payload["meta"] if "meta" in payload else {"items": payload["items"]}
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, meta)
        return BatchResult()


HANDLERS: dict[str, Handler] = {"noop": Noop(), "source": Source(), "forward": Forward()}
"""What ``flowkit worker --handlers shapes:HANDLERS`` loads in the distributed bench."""


# -- graphs -----------------------------------------------------------------------------


def chain_graph(nodes: int) -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": f"n{i}", "type": "noop", **({"depends_on": [f"n{i - 1}"]} if i else {})}
            for i in range(nodes)
        ]
    }


def fan_graph(width: int) -> dict[str, Any]:
    middle = [f"w{i}" for i in range(width)]
    return {
        "nodes": [
            {"node_id": "root", "type": "noop"},
            *({"node_id": m, "type": "noop", "depends_on": ["root"]} for m in middle),
            {"node_id": "sink", "type": "noop", "depends_on": middle},
        ]
    }


def streaming_graph(batches: int) -> dict[str, Any]:
    """s1 writes ``batches`` artifacts; s2 streams them regrouped (``rechunk:size``), s3
    streams s2's (both ``start_when: first_batch``)."""

    def follows(upstream: str, adapter: str, **args: Any) -> dict[str, Any]:
        return {
            "start_when": "first_batch",
            "input_inline": {
                "input_adapter": adapter,
                "input_args": {"from_nodes": [upstream], **args},
            },
        }

    rechunk = follows("s1", "pull.from_artifacts.rechunk:size", size=1, meta_list_key="items")
    return {
        "nodes": [
            {"node_id": "s1", "type": "source", "io": {"input_inline": {"batches": batches}}},
            {"node_id": "s2", "type": "forward", "depends_on": ["s1"], "io": rechunk},
            {
                "node_id": "s3",
                "type": "forward",
                "depends_on": ["s2"],
                "io": follows("s2", "pull.from_artifacts"),
            },
        ]
    }


SCALE_NODES = 20
"""Nodes in each task of the scale shape (a chain: 200 tasks at once, 20 nodes each)."""


def scale_graph() -> dict[str, Any]:
    return chain_graph(SCALE_NODES)


# -- figures from a finished task -------------------------------------------------------


def _ms(values: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def ensure_finished(status: TaskStatus) -> None:
    if not status.finished:
        raise RuntimeError(f"benchmark task {status.task_id} ended {status.status.value}: {status.error}")


def chain_figures(status: TaskStatus, elapsed: float) -> dict[str, float]:
    """Per-node cost, and dispatch latency: node i is ready when node i-1 finished."""
    ensure_finished(status)
    nodes = [status.nodes[f"n{i}"] for i in range(len(status.nodes))]
    to_running, to_finished = [], []
    for before, node in itertools.pairwise(nodes):
        assert before.finished_at is not None and node.started_at is not None and node.finished_at is not None
        to_running.append(node.started_at - before.finished_at)
        to_finished.append(node.finished_at - before.finished_at)
    run50, run99 = _ms(to_running)
    fin50, fin99 = _ms(to_finished)
    return {
        "ms_per_node": elapsed * 1000 / len(nodes),
        "ready_running_p50_ms": run50,
        "ready_running_p99_ms": run99,
        "ready_finished_p50_ms": fin50,
        "ready_finished_p99_ms": fin99,
    }


def fan_figures(status: TaskStatus, elapsed: float) -> dict[str, float]:
    ensure_finished(status)
    return {"nodes_per_s": len(status.nodes) / elapsed, "ms_per_node": elapsed * 1000 / len(status.nodes)}


def streaming_figures(status: TaskStatus, elapsed: float, batches: int) -> dict[str, float]:
    """Batches/s over the whole task; first to last: s1's first artifact to s3's end."""
    ensure_finished(status)
    if status.nodes["s3"].batches != batches:
        raise RuntimeError(f"stage 3 counted {status.nodes['s3'].batches} batches, expected {batches}")
    first, last = status.nodes["s1"].first_batch_at, status.nodes["s3"].finished_at
    assert first is not None and last is not None
    return {
        "batches_per_s": batches / elapsed,
        "ms_per_batch": elapsed * 1000 / batches,
        "first_to_last_s": last - first,
    }


def scale_figures(statuses: list[TaskStatus], elapsed: float) -> dict[str, float]:
    for status in statuses:
        ensure_finished(status)
    nodes = sum(len(s.nodes) for s in statuses)
    return {"nodes_per_s": nodes / elapsed, "ms_per_node": elapsed * 1000 / nodes}
