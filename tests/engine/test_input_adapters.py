"""pull.from_artifacts and pull.from_artifacts.rechunk:size, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from engine_support import Recorder, Source

from flowkit import LocalRuntime
from flowkit.states import State
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, RunContext


class Metas(Handler):
    """Writes the given artifact metas, one per batch, with uids m0, m1, ..."""

    def __init__(self, metas: list[dict[str, Any]]) -> None:
        self.metas = metas

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i, meta in enumerate(self.metas):
            yield Batch(batch_uid=f"m{i}", payload=meta)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        await ctx.artifacts_writer.upsert_partial(batch.batch_uid, batch.payload)
        return BatchResult()


def reader_graph(adapter: str, **args: Any) -> dict[str, Any]:
    return {
        "nodes": [
            {"node_id": "up", "type": "up"},
            {
                "node_id": "down",
                "type": "recorder",
                "depends_on": ["up"],
                "io": {
                    "input_inline": {"input_adapter": adapter, "input_args": {"from_nodes": ["up"], **args}}
                },
            },
        ]
    }


async def run_reader(up: Handler, adapter: str, **args: Any) -> tuple[Recorder, Any]:
    recorder = Recorder()
    async with LocalRuntime({"up": up, "recorder": recorder}) as rt:
        status = await rt.run(reader_graph(adapter, **args), timeout=5)
    return recorder, status


async def test_from_artifacts_payload_names_node_ref_and_meta() -> None:
    recorder, status = await run_reader(Metas([{"x": 1}, {"x": 2}]), "pull.from_artifacts")
    assert status.status == State.FINISHED
    task_id = status.task_id
    assert [b.payload for b in recorder.batches["down"]] == [
        {
            "from_node": "up",
            "ref": {"task_id": task_id, "node_id": "up", "batch_uid": "m0"},
            "meta": {"x": 1},
        },
        {
            "from_node": "up",
            "ref": {"task_id": task_id, "node_id": "up", "batch_uid": "m1"},
            "meta": {"x": 2},
        },
    ]
    assert status.nodes["down"].batches == 2


async def test_rechunk_chunks_the_meta_list_key_list() -> None:
    recorder, status = await run_reader(
        Metas([{"items": [1, 2, 3, 4, 5]}]), "pull.from_artifacts.rechunk:size", size=2, meta_list_key="items"
    )
    assert status.status == State.FINISHED
    assert [b.payload["items"] for b in recorder.batches["down"]] == [[1, 2], [3, 4], [5]]
    parent = recorder.batches["down"][0].payload["parent"]
    assert parent == {
        "from_node": "up",
        "ref": {"task_id": status.task_id, "node_id": "up", "batch_uid": "m0"},
    }


async def test_rechunk_without_the_key_in_meta_makes_the_meta_one_item() -> None:
    recorder, _ = await run_reader(
        Metas([{"skus": [1, 2, 3]}]), "pull.from_artifacts.rechunk:size", size=2, meta_list_key="items"
    )
    assert [b.payload["items"] for b in recorder.batches["down"]] == [[{"skus": [1, 2, 3]}]]


async def test_rechunk_without_meta_list_key_does_not_guess_domain_keys() -> None:
    recorder, _ = await run_reader(Metas([{"items": [1, 2, 3]}]), "pull.from_artifacts.rechunk:size", size=2)
    assert [b.payload["items"] for b in recorder.batches["down"]] == [[{"items": [1, 2, 3]}]]


async def test_rechunk_is_deterministic_across_runs() -> None:
    runs = []
    for _ in range(2):
        recorder, status = await run_reader(
            Source(count=3, per_batch=3), "pull.from_artifacts.rechunk:size", size=2, meta_list_key="items"
        )
        assert status.status == State.FINISHED
        runs.append([(b.batch_uid, b.payload["items"]) for b in recorder.batches["down"]])
    assert runs[0] == runs[1]
    assert runs[0] == [
        ("up:b0:0", [0, 1]),
        ("up:b0:1", [2]),
        ("up:b1:0", [3, 4]),
        ("up:b1:1", [5]),
        ("up:b2:0", [6, 7]),
        ("up:b2:1", [8]),
    ]


async def test_empty_upstream_completes_with_count_zero() -> None:
    recorder, status = await run_reader(
        Source(count=0), "pull.from_artifacts.rechunk:size", size=2, meta_list_key="items"
    )
    assert status.status == State.FINISHED
    assert status.nodes["down"].status == State.FINISHED
    assert status.nodes["down"].batches == 0
    assert recorder.batches == {}


async def test_empty_upstream_completes_a_streaming_reader() -> None:
    recorder = Recorder()
    graph = reader_graph("pull.from_artifacts")
    graph["nodes"][1]["io"]["start_when"] = "first_batch"
    async with LocalRuntime({"up": Source(count=0), "recorder": recorder}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FINISHED
    assert status.nodes["down"].batches == 0


async def test_reader_of_several_upstreams_gets_each_nodes_artifacts() -> None:
    recorder = Recorder()
    graph = {
        "nodes": [
            {"node_id": "left", "type": "up"},
            {"node_id": "right", "type": "up"},
            {
                "node_id": "down",
                "type": "recorder",
                "io": {
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_nodes": ["left", "right"]},
                    }
                },
            },
        ]
    }
    async with LocalRuntime({"up": Source(count=2), "recorder": recorder}) as rt:
        status = await rt.run(graph, timeout=5)
    assert status.status == State.FINISHED
    assert sorted(recorder.uids("down")) == ["left:b0", "left:b1", "right:b0", "right:b1"]
