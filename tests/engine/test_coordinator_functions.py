"""Coordinator functions: merge.generic, metrics.aggregate and user-registered ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from engine_support import Recorder, Source

from flowkit import FunctionContext, LocalRuntime, coordinator_function
from flowkit.coordinator.functions import FUNCTIONS
from flowkit.states import State


def merge_graph() -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "node1", "type": "source"},
            {"node_id": "node2", "type": "source"},
            {
                "node_id": "merger",
                "type": "coordinator_fn",
                "io": {
                    "fn": "merge.generic",
                    "fn_args": {"from_nodes": ["node1", "node2"], "target": {"key": "merged_result"}},
                },
            },
        ]
    }


async def test_merge_generic_writes_target_key_and_an_artifact() -> None:
    async with LocalRuntime({"source": Source(count=2, per_batch=1)}) as rt:
        status = await rt.run(merge_graph(), timeout=5)
        artifacts = await rt.store.list_artifacts(status.task_id, "merger")
    assert status.status == State.FINISHED
    assert status.result["merged_result"] == [{"items": [0]}, {"items": [1]}, {"items": [0]}, {"items": [1]}]
    assert status.nodes["merger"].metrics == {"merged_items": 4}
    assert [a.meta["count"] for a in artifacts] == [4]


async def test_merge_output_can_be_rechunked_downstream() -> None:
    graph = merge_graph()
    recorder = Recorder()
    graph["nodes"].append(
        {
            "node_id": "load",
            "type": "recorder",
            "depends_on": ["merger"],
            "io": {
                "input_inline": {
                    "input_adapter": "pull.from_artifacts.rechunk:size",
                    "input_args": {"from_nodes": ["merger"], "size": 3, "meta_list_key": "items"},
                }
            },
        }
    )
    async with LocalRuntime({"source": Source(count=2, per_batch=1), "recorder": recorder}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FINISHED
    assert [len(b.payload["items"]) for b in recorder.batches["load"]] == [3, 1]


async def test_metrics_aggregate_sums_upstream_metrics() -> None:
    graph = {
        "nodes": [
            {"node_id": "a", "type": "source"},
            {"node_id": "b", "type": "source"},
            {
                "node_id": "agg",
                "type": "coordinator_fn",
                "depends_on": ["a", "b"],
                "io": {"fn": "metrics.aggregate", "fn_args": {"target": {"key": "totals"}}},
            },
        ]
    }
    async with LocalRuntime({"source": Source(count=3, per_batch=2)}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FINISHED
    assert status.result["totals"] == {"rows": 12}
    assert status.nodes["agg"].metrics == {"rows": 12}


@pytest.fixture
def user_functions() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        FUNCTIONS.pop(name, None)


async def test_user_registered_function_runs_in_the_coordinator(user_functions: list[str]) -> None:
    seen: dict[str, Any] = {}

    @coordinator_function("test.count_artifacts")
    async def count_artifacts(ctx: FunctionContext, args: dict[str, Any]) -> dict[str, Any]:
        seen["params"] = ctx.params
        seen["args"] = args
        artifacts = await ctx.artifacts("up")
        ctx.result["artifact_count"] = len(artifacts)
        return {"artifacts": len(artifacts), "note": "not a number"}

    user_functions.append("test.count_artifacts")
    graph = {
        "nodes": [
            {"node_id": "up", "type": "source"},
            {
                "node_id": "count",
                "type": "coordinator_fn",
                "depends_on": ["up"],
                "io": {"fn": "test.count_artifacts", "fn_args": {"limit": 5}},
            },
        ]
    }
    async with LocalRuntime({"source": Source(count=3)}) as rt:
        status = await rt.run(graph, params={"day": "2026-11-23"}, timeout=5)
    assert status.status == State.FINISHED
    assert seen == {"params": {"day": "2026-11-23"}, "args": {"limit": 5}}
    assert status.result["artifact_count"] == 3
    assert status.nodes["count"].metrics == {"artifacts": 3}


async def test_failing_user_function_fails_its_node_and_dependents(user_functions: list[str]) -> None:
    @coordinator_function("test.explode")
    async def explode(ctx: FunctionContext, args: dict[str, Any]) -> None:
        raise RuntimeError("kaboom")

    user_functions.append("test.explode")
    graph = {
        "nodes": [
            {"node_id": "boom", "type": "coordinator_fn", "io": {"fn": "test.explode"}},
            {"node_id": "after", "type": "recorder", "depends_on": ["boom"]},
        ]
    }
    async with LocalRuntime({"recorder": Recorder()}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FAILED
    assert status.nodes["boom"].error is not None
    assert status.nodes["boom"].error.code == "RuntimeError"
    assert "kaboom" in status.nodes["boom"].error.message
    assert status.nodes["after"].error is not None
    assert status.nodes["after"].error.code == "upstream_failed"
