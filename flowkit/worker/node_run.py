"""One attempt of one node on a worker: init → batches → process → finalize → cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import HandlerError, InputAdapterError
from ..metrics import add_metrics, numeric_metrics
from ..states import NodeError
from ..store.base import CountedBatch
from .adapters import ADAPTERS, ArtifactFeed, adapter_batches, check_adapter_args
from .batch_writes import BatchWrites
from .context import RunContext
from .handlers.base import Batch, BatchResult, FinalizeResult, Handler

log = logging.getLogger("flowkit.worker")

BatchReporter = Callable[[list[tuple[str, dict[str, float]]]], Awaitable[None]]
"""Tells the coordinator of newly counted batches (uid, metrics), in one report."""


@dataclass
class Outcome:
    """How the attempt ended: finished (with finalize metrics), failed, or cancelled."""

    state: str  # "finished" | "failed" | "cancelled"
    metrics: dict[str, float] = field(default_factory=dict)
    error: NodeError | None = None
    batches: int | None = None
    """Finished: the node's batch records as this attempt knows them (earlier attempts'
    and its own first records); the coordinator recounts from the store when it differs."""
    ending: list[CountedBatch] = field(default_factory=list)
    """Finished: the last batch records, to be stored with the outcome (and reported with
    it), not on their own: a short run's batches cost no write and no message of their own."""


class NodeRun:
    """Drives a handler through one attempt and reports each new batch."""

    def __init__(
        self,
        handler: Handler,
        ctx: RunContext,
        io: dict[str, Any],
        feed: ArtifactFeed,
        report_batches: BatchReporter,
        counted: set[str] | None = None,
    ) -> None:
        """``counted``: the batch uids earlier attempts recorded, if already read."""
        self.handler = handler
        self.ctx = ctx
        self.io = io
        self.feed = feed
        self.report_batches = report_batches
        self.counted = counted
        self._batch_records = 0
        self._ending: list[CountedBatch] = []  # taken from the writes for the outcome's write
        self._counted_early: set[str] = set()  # their uids, counted when taken
        writer = ctx.artifacts_writer
        self.writes = BatchWrites(
            ctx.store,
            ctx.task_id,
            ctx.node_id,
            new_stream=writer.first_attempt,
            on_counted=self._counted,
            on_first_artifact=writer.on_first_write,
            on_checkpoint=ctx.on_checkpoint,
        )
        writer.behind = self.writes

    async def execute(self) -> Outcome:
        ctx = self.ctx
        try:
            await self.handler.init(self._run_info())
            await self._process_all()
            self._take_ending()
            await self.writes.drain()  # finalize sees every batch counted, stored or to be stored at the end
            final = await self.handler.finalize(ctx) or FinalizeResult()
            if self.writes.checkpoint_waiting:  # written only after the records before it
                self._put_back_ending()
            await self.writes.drain()
            await ctx.artifacts_writer.complete()
            metrics = numeric_metrics(final.metrics)
            return Outcome("finished", metrics=metrics, batches=self._batch_records, ending=self._ending)
        except asyncio.CancelledError:
            if ctx.cancel_flag.is_set():
                await self._keep_what_was_done()
                return Outcome("cancelled")
            raise  # the worker itself is stopping: hand the node back
        except Exception as exc:  # the handler's error becomes the node's error
            await self._keep_what_was_done()
            return Outcome("failed", error=self._classify(exc))
        finally:
            await self.writes.close()
            try:
                await self.handler.cleanup()
            except Exception:
                log.exception("task %s node %s: cleanup() raised", ctx.task_id, ctx.node_id)

    async def _keep_what_was_done(self) -> None:
        """The batches done before a failure or a cancel count (a retry goes on after them),
        unless storing them is what failed."""
        self._put_back_ending()
        with contextlib.suppress(Exception):
            await self.writes.drain()

    def _take_ending(self) -> None:
        self._ending = self.writes.take_records()
        self._count([(batch.batch_uid, batch.metrics) for batch in self._ending])
        self._counted_early = {batch.batch_uid for batch in self._ending}

    def _put_back_ending(self) -> None:
        """The outcome will not carry them: written as the others (counted already)."""
        self.writes.put_back(self._ending)
        self._ending = []

    def _run_info(self) -> dict[str, Any]:
        ctx = self.ctx
        return {
            "task_id": ctx.task_id,
            "node_id": ctx.node_id,
            "attempt": ctx.attempt,
            "role": ctx.role,
            "params": ctx.params,
            "worker_id": ctx.worker_id,
            "io": self.io,
            "checkpoint": ctx.checkpoint,
        }

    def _batches(self) -> AsyncIterator[Batch]:
        """Orchestrator-first: the node's adapter if it names one, else the handler's."""
        inline = self.io.get("input_inline") or {}
        name = inline.get("input_adapter") if isinstance(inline, dict) else None
        if name is None:
            return _as_async_iterator(self.handler.iter_batches(self.io), type(self.handler).__name__)
        args = inline.get("input_args", {})
        if name not in ADAPTERS:
            raise InputAdapterError("bad_input_adapter", f"unknown input adapter '{name}'")
        problem = check_adapter_args(name, args) if isinstance(args, dict) else "input_args must be a mapping"
        if problem:
            raise InputAdapterError("bad_input_args", f"adapter '{name}': {problem}")
        return adapter_batches(name, args, self.feed)

    async def _process_all(self) -> None:
        ctx = self.ctx
        done = (
            self.counted
            if self.counted is not None
            else set(await ctx.store.batch_records(ctx.task_id, ctx.node_id))
        )
        seen: set[str] = set()
        self._batch_records = len(done)
        async for batch in self._batches():
            if ctx.cancel_flag.is_set():
                raise asyncio.CancelledError
            if not isinstance(batch, Batch):
                raise HandlerError(
                    "bad_batch",
                    f"iter_batches must yield Batch(batch_uid=..., payload=...), got {type(batch).__name__}",
                    permanent=True,
                )
            uid = str(batch.batch_uid)
            if uid in seen or uid in done:
                ctx.skipped_count += 1  # a repeated or already counted batch counts once
                continue
            seen.add(uid)
            result = await self.handler.process_batch(batch, ctx)
            if result is None:
                result = BatchResult()
            elif not isinstance(result, BatchResult):
                raise HandlerError(
                    "bad_batch_result",
                    f"process_batch must return BatchResult(...) or None, got {type(result).__name__}",
                    permanent=True,
                )
            if not result.success:
                raise HandlerError(
                    result.reason_code or "batch_failed",
                    result.error or f"batch '{uid}' reported success=False",
                    permanent=result.permanent,
                )
            metrics = numeric_metrics(result.metrics)
            await self.writes.record(CountedBatch(ctx.task_id, ctx.node_id, uid, metrics))

    async def _counted(self, records: list[tuple[CountedBatch, bool]]) -> None:
        """Stored: each first record counts, and they are reported together."""
        new = [(batch.batch_uid, batch.metrics) for batch, first in records if first]
        self._count([(uid, metrics) for uid, metrics in new if uid not in self._counted_early])
        if new:
            await self.report_batches(new)

    def _count(self, batches: list[tuple[str, dict[str, float]]]) -> None:
        ctx = self.ctx
        for _, metrics in batches:
            add_metrics(ctx.metrics, metrics)
        ctx.processed_count += len(batches)
        self._batch_records += len(batches)

    def _classify(self, exc: Exception) -> NodeError:
        ctx = self.ctx
        try:
            code, permanent = self.handler.classify_error(exc)
        except Exception:
            log.exception("task %s node %s: classify_error() raised", ctx.task_id, ctx.node_id)
            code, permanent = type(exc).__name__, False
        if isinstance(exc, InputAdapterError):
            code, permanent = exc.code, True
        # INFO: the coordinator decides whether this is a retry or the node's end, and says so.
        log.info(
            "task %s node %s attempt %d failed: %s (%s, %s)",
            ctx.task_id,
            ctx.node_id,
            ctx.attempt,
            exc,
            code,
            "permanent" if permanent else "transient",
        )
        return NodeError(code=str(code), message=str(exc) or type(exc).__name__, permanent=bool(permanent))


async def _as_async_iterator(batches: Any, handler: str) -> AsyncIterator[Batch]:
    """``iter_batches`` is meant to be an async generator; a plain iterable (returned, or
    returned by a coroutine) works too."""
    if inspect.iscoroutine(batches):
        batches = await batches
    if hasattr(batches, "__aiter__"):
        async for batch in batches:
            yield batch
    elif hasattr(batches, "__iter__") and not isinstance(batches, str | bytes | dict):
        for batch in batches:
            yield batch
    else:
        raise HandlerError(
            "bad_iter_batches",
            f"{handler}.iter_batches must be an async generator (or return an iterable of Batch), "
            f"got {type(batches).__name__}",
            permanent=True,
        )
