"""flowkit.testing: run a graph in-process and assert on states, artifacts and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flowkit import GraphError, LocalRuntime
from flowkit.testing import TaskResult, run_graph, run_graph_sync
from flowkit.worker.handlers.base import Batch, BatchResult, FinalizeResult, Handler, RunContext


class Numbers(Handler):
    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(3):
            yield Batch(batch_uid=f"b{i}", payload=i)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"items": [batch.payload] * 2})
        return BatchResult(metrics={"rows": 2})

    async def finalize(self, ctx: RunContext) -> FinalizeResult:
        return FinalizeResult(metrics={"finalized": 1})


class Sum(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, {"sum": sum(batch.payload["items"])})
        return BatchResult(metrics={"items": len(batch.payload["items"])})


class Fails(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        raise ValueError("bad row")


HANDLERS = {"numbers": Numbers(), "sum": Sum(), "fails": Fails()}
GRAPH = {
    "nodes": [
        {"node_id": "numbers", "type": "numbers"},
        {
            "node_id": "sum",
            "type": "sum",
            "depends_on": ["numbers"],
            "io": {
                "input_inline": {
                    "input_adapter": "pull.from_artifacts.rechunk:size",
                    "input_args": {"from_nodes": ["numbers"], "size": 10, "meta_list_key": "items"},
                }
            },
        },
    ]
}


async def test_run_graph_exposes_states_artifacts_and_metrics() -> None:
    result = await run_graph(GRAPH, HANDLERS)
    assert result.finished, result.states()
    assert result.state("sum") == "finished"
    assert result.artifacts("numbers") == [{"items": [0, 0]}, {"items": [1, 1]}, {"items": [2, 2]}]
    assert [a["sum"] for a in result.artifacts("sum")] == [0, 2, 4]
    assert result.metrics("numbers") == {"rows": 6, "finalized": 1}
    assert result.node("sum").batches == 3


async def test_a_failed_task_is_returned_for_assertions_not_raised() -> None:
    graph = {
        "nodes": [{"node_id": "x", "type": "fails"}, {"node_id": "y", "type": "numbers", "depends_on": ["x"]}]
    }
    result = await run_graph(graph, HANDLERS)
    assert not result.finished
    assert result.states() == {"x": "failed", "y": "failed"}
    error = result.node("x").error
    assert error is not None and error.code == "ValueError"


async def test_an_invalid_graph_raises_graph_error() -> None:
    with pytest.raises(GraphError, match="no handler serves role 'nobody'"):
        await run_graph({"nodes": [{"node_id": "x", "type": "nobody"}]}, HANDLERS)


async def test_an_unknown_node_name_lists_the_known_ones() -> None:
    result = await run_graph({"nodes": [{"node_id": "n", "type": "numbers"}]}, HANDLERS)
    with pytest.raises(KeyError, match=r"no node 'typo' \(nodes: \['n'\]\)"):
        result.artifacts("typo")


def test_run_graph_sync_reads_a_graph_file(tmp_path: Any) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("nodes:\n  - {node_id: n, type: numbers}\n")
    assert run_graph_sync(str(path), HANDLERS).finished


async def test_plugin_fixture_runs_graphs(run_flowkit_graph: Callable[..., Any]) -> None:
    result = await run_flowkit_graph(GRAPH, HANDLERS, timeout=10)
    assert isinstance(result, TaskResult)
    assert result.finished


async def test_plugin_runtime_fixture_gives_a_local_runtime(flowkit_runtime: type[LocalRuntime]) -> None:
    async with flowkit_runtime(HANDLERS) as runtime:
        status = await runtime.run(GRAPH, timeout=10)
    assert status.finished
