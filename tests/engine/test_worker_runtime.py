"""The worker runtime: lifecycle, orchestrator-first input, retries, checkpoints, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from engine_support import Recorder, Source

from flowkit import LocalRuntime
from flowkit.states import State, TaskStatus
from flowkit.testing import run_graph
from flowkit.worker.handlers.base import Batch, BatchResult, FinalizeResult, Handler, RunContext


def one(role: str, **fields: Any) -> dict[str, Any]:
    return {"nodes": [{"node_id": "n", "type": role, **fields}]}


async def run(handlers: dict[str, Handler], graph: dict[str, Any]) -> TaskStatus:
    async with LocalRuntime(handlers) as rt:
        return await rt.run(graph, timeout=5)


# --- lifecycle and input ----------------------------------------------------------------


class Lifecycle(Handler):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.run_info: dict[str, Any] = {}
        self.input_data: dict[str, Any] = {}
        self.fail = False

    async def init(self, run_info: dict[str, Any]) -> None:
        self.calls.append("init")
        self.run_info = run_info

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        self.calls.append("iter_batches")
        self.input_data = input_data
        for item in input_data.get("input_inline", {}).get("items", []):
            yield Batch(batch_uid=f"item_{item}", payload=item)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.calls.append(f"process:{batch.batch_uid}")
        if self.fail:
            raise ValueError("bad row")
        return BatchResult(success=True)

    async def finalize(self, ctx: RunContext) -> FinalizeResult:
        self.calls.append("finalize")
        return FinalizeResult(metrics={"total": ctx.processed_count})

    async def cleanup(self) -> None:
        self.calls.append("cleanup")


async def test_handler_runs_init_batches_finalize_cleanup_in_order() -> None:
    handler = Lifecycle()
    status = await run({"p": handler}, one("p", io={"input_inline": {"items": [1, 2]}}))
    assert status.status == State.FINISHED
    assert handler.calls == [
        "init",
        "iter_batches",
        "process:item_1",
        "process:item_2",
        "finalize",
        "cleanup",
    ]
    assert handler.run_info["task_id"] == status.task_id
    assert handler.run_info["node_id"] == "n"
    assert handler.run_info["attempt"] == 1


async def test_cleanup_is_called_when_a_batch_fails() -> None:
    handler = Lifecycle()
    handler.fail = True
    status = await run({"p": handler}, one("p", io={"input_inline": {"items": [1]}}))
    assert status.status == State.FAILED
    assert handler.calls[-1] == "cleanup"
    assert "finalize" not in handler.calls


async def test_iter_batches_gets_the_node_io_as_input_data() -> None:
    handler = Lifecycle()
    io = {"input_inline": {"items": [7], "batch_size": 10}, "start_when": "ready"}
    await run({"p": handler}, one("p", io=io))
    assert handler.input_data.get("input_inline", {}) == {"items": [7], "batch_size": 10}
    assert handler.input_data["start_when"] == "ready"


async def test_quick_example_graph_runs_a_default_handler() -> None:
    recorder = Recorder()
    graph = {
        "nodes": [
            {"node_id": "process_data", "type": "processor", "io": {"input_inline": {"data": "hello world"}}}
        ],
        "edges": [],
    }
    status = await run({"processor": recorder}, graph)
    assert status.status == State.FINISHED
    assert [b.payload for b in recorder.batches["process_data"]] == [{"data": "hello world"}]


async def test_input_adapter_is_used_instead_of_iter_batches() -> None:
    handler = Lifecycle()
    graph = {
        "nodes": [
            {"node_id": "up", "type": "source"},
            {
                "node_id": "n",
                "type": "p",
                "depends_on": ["up"],
                "io": {
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_nodes": ["up"]},
                    }
                },
            },
        ]
    }
    status = await run({"source": Source(count=2), "p": handler}, graph)
    assert status.status == State.FINISHED
    assert "iter_batches" not in handler.calls
    assert handler.calls == ["init", "process:up:b0", "process:up:b1", "finalize", "cleanup"]


# --- metrics ----------------------------------------------------------------------------


class Counted(Handler):
    def __init__(self, uids: list[str]) -> None:
        self.uids = uids
        self.processed: list[str] = []

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for uid in self.uids:
            yield Batch(batch_uid=uid, payload={"rows": 2})

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.processed.append(batch.batch_uid)
        return BatchResult(metrics={"rows": batch.payload["rows"], "ms": 0.5, "label": "text", "ok": True})

    async def finalize(self, ctx: RunContext) -> FinalizeResult:
        return FinalizeResult(metrics={"total_processed": ctx.processed_count})


async def test_batch_metrics_are_summed_and_finalize_metrics_merged() -> None:
    status = await run({"p": Counted(["a", "b", "c"])}, one("p"))
    node = status.nodes["n"]
    assert node.batches == 3
    assert node.metrics == {"rows": 6, "ms": 1.5, "total_processed": 3}


async def test_duplicate_batch_uids_are_processed_and_counted_once() -> None:
    handler = Counted(["a", "b", "a", "b", "c"])
    status = await run({"p": handler}, one("p"))
    assert handler.processed == ["a", "b", "c"]
    assert status.nodes["n"].batches == 3
    assert status.nodes["n"].metrics["rows"] == 6


# --- retries and errors -------------------------------------------------------------------


class Flaky(Handler):
    """Fails its first ``failures`` attempts with ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.attempts: list[int] = []

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.attempts.append(ctx.attempt)
        if len(self.attempts) <= self.failures:
            raise self.error
        return BatchResult(metrics={"ok": 1})

    def classify_error(self, error: Exception) -> tuple[str, bool]:
        if isinstance(error, ValueError):
            return "validation_failed", True
        if isinstance(error, KeyError):
            return "bad_input", False
        return "temporary_failure", False


async def test_transient_error_is_retried_until_success() -> None:
    handler = Flaky(2, ConnectionError("down"))
    status = await run({"p": handler}, one("p", retry_policy={"max": 3, "backoff_sec": 0.01}))
    assert status.status == State.FINISHED
    assert handler.attempts == [1, 2, 3]
    assert status.nodes["n"].attempts == 3
    assert status.nodes["n"].metrics == {"ok": 1}
    assert status.nodes["n"].error is None


async def test_node_fails_after_max_attempts_with_the_last_error() -> None:
    handler = Flaky(5, ConnectionError("down"))
    status = await run({"p": handler}, one("p", retry_policy={"max": 2, "backoff_sec": 0}))
    assert status.status == State.FAILED
    assert handler.attempts == [1, 2]
    assert status.nodes["n"].error is not None
    assert status.nodes["n"].error.code == "temporary_failure"


async def test_error_classified_permanent_is_not_retried() -> None:
    handler = Flaky(1, ValueError("schema"))
    status = await run({"p": handler}, one("p", retry_policy={"max": 3, "backoff_sec": 0}))
    assert status.status == State.FAILED
    assert handler.attempts == [1]
    error = status.nodes["n"].error
    assert error is not None and error.code == "validation_failed" and error.permanent


async def test_error_code_in_permanent_on_is_not_retried() -> None:
    handler = Flaky(1, KeyError("sku"))
    policy = {"max": 3, "backoff_sec": 0, "permanent_on": ["bad_input", "schema_mismatch"]}
    status = await run({"p": handler}, one("p", retry_policy=policy))
    assert handler.attempts == [1]
    error = status.nodes["n"].error
    assert error is not None and error.code == "bad_input" and error.permanent


class Refuses(Handler):
    def __init__(self, reason_code: str) -> None:
        self.reason_code = reason_code
        self.attempts = 0

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        self.attempts += 1
        return BatchResult(success=False, reason_code=self.reason_code)


async def test_unsuccessful_batch_result_fails_the_node_with_its_reason_code() -> None:
    handler = Refuses("schema_mismatch")
    policy = {"max": 3, "backoff_sec": 0, "permanent_on": ["schema_mismatch"]}
    status = await run({"p": handler}, one("p", retry_policy=policy))
    assert status.status == State.FAILED
    assert handler.attempts == 1
    assert status.nodes["n"].error is not None
    assert status.nodes["n"].error.code == "schema_mismatch"


async def test_unsuccessful_batch_result_with_transient_code_is_retried() -> None:
    handler = Refuses("rate_limited")
    status = await run({"p": handler}, one("p", retry_policy={"max": 2, "backoff_sec": 0}))
    assert handler.attempts == 2
    assert status.nodes["n"].error is not None
    assert status.nodes["n"].error.code == "rate_limited"


# --- checkpoints ------------------------------------------------------------------------


class Resumable(Handler):
    """Attempt 1 saves a checkpoint after each batch and fails transiently on b2."""

    def __init__(self) -> None:
        self.checkpoints: list[dict[str, Any] | None] = []
        self.processed: list[tuple[int, str]] = []

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        for i in range(4):
            yield Batch(batch_uid=f"b{i}", payload={"count": 10})

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        if not self.processed or self.processed[-1][0] != ctx.attempt:
            self.checkpoints.append(ctx.checkpoint)
        if ctx.attempt == 1 and batch.batch_uid == "b2":
            raise ConnectionError("lost the database")
        self.processed.append((ctx.attempt, batch.batch_uid))
        await ctx.save_checkpoint({"last_id": batch.batch_uid})
        return BatchResult(metrics={"items": batch.payload["count"]})


async def test_retry_resumes_from_the_checkpoint_without_reprocessing() -> None:
    handler = Resumable()
    status = await run({"p": handler}, one("p", retry_policy={"max": 2, "backoff_sec": 0}))
    assert status.status == State.FINISHED
    assert handler.checkpoints == [None, {"last_id": "b1"}]
    assert handler.processed == [(1, "b0"), (1, "b1"), (2, "b2"), (2, "b3")]
    assert status.nodes["n"].batches == 4
    assert status.nodes["n"].metrics == {"items": 40}


class _ListBatches(Handler):
    """iter_batches written as a plain method returning a list (not an async generator)."""

    def iter_batches(self, input_data: dict[str, Any]) -> Any:  # type: ignore[override]
        return [Batch(batch_uid=f"b{i}", payload=i) for i in range(3)]

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        return BatchResult(metrics={"n": batch.payload})


class _YieldsDicts(Handler):
    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Any]:
        yield {"batch_uid": "b0", "payload": 1}

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        raise AssertionError("never called")


class _ReturnsDict(Handler):
    async def process_batch(self, batch: Batch, ctx: RunContext) -> Any:
        return {"success": True}


async def test_iter_batches_may_return_a_plain_iterable() -> None:
    result = await run_graph({"nodes": [{"node_id": "a", "type": "r"}]}, {"r": _ListBatches()})
    assert result.finished
    assert result.node("a").batches == 3
    assert result.metrics("a") == {"n": 0 + 1 + 2}


@pytest.mark.parametrize(
    ("handler", "code"), [(_YieldsDicts(), "bad_batch"), (_ReturnsDict(), "bad_batch_result")]
)
async def test_a_handler_breaking_the_batch_contract_fails_permanently_with_a_clear_code(
    handler: Handler, code: str
) -> None:
    graph = {"nodes": [{"node_id": "a", "type": "r", "retry_policy": {"max": 3}}]}
    result = await run_graph(graph, {"r": handler})
    node = result.node("a")
    assert node.status == State.FAILED
    assert node.attempts == 1  # permanent: not retried
    assert node.error is not None and node.error.code == code
    assert "Batch" in node.error.message
