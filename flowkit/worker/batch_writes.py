"""Write-behind of one attempt's batches: artifacts, batch records and the checkpoint go
to the store in groups while the handler goes on with the next batches.

Written one by one, a streaming stage costs two store round trips per batch (its
artifact, its record), awaited before the next batch starts, and a stage of small
batches runs at the store's pace. Here they queue, and one flush writes what queued
meanwhile: every artifact (one bulk insert), then every batch record (one bulk
insert), then the last checkpoint. That order is the guarantee the one-by-one writes
gave: a recorded batch has its artifact stored, and a checkpoint is written only after
the records of the batches before it; so an attempt cut off midway loses only batches
nobody counted, which the next attempt runs again. At most ``limit`` batches wait: then
the handler waits for the flush (backpressure). A flush that fails fails the attempt,
at the handler's next batch or at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..store.base import CountedBatch, Store

PENDING_LIMIT = 256
"""Batches processed but not yet stored, at most, before the handler waits."""

Counted = Callable[[list[tuple[CountedBatch, bool]]], Awaitable[None]]
"""Told of each flushed batch record, in order, and whether it was the batch's first."""


class BatchWrites:
    def __init__(
        self,
        store: Store,
        task_id: str,
        node_id: str,
        *,
        new_stream: bool,
        on_counted: Counted,
        on_first_artifact: Callable[[], Awaitable[None]] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        limit: int = PENDING_LIMIT,
    ) -> None:
        """``new_stream``: no earlier attempt can have written this node's artifacts."""
        self._store, self._task_id, self._node_id = store, task_id, node_id
        self._new_stream = new_stream
        self._on_counted = on_counted
        self._on_first_artifact = on_first_artifact
        self._on_checkpoint = on_checkpoint
        self._limit = limit
        self._artifacts: dict[str, dict[str, Any]] = {}  # uid -> meta, in write order
        self._stored_uids: set[str] = set()
        self._records: list[CountedBatch] = []
        self._unstored = 0  # batches recorded here whose records are not stored yet
        self._checkpoint: dict[str, Any] | None = None  # after the records queued so far
        self._next_checkpoint: dict[str, Any] | None = None  # waits for its batch's record
        self._flusher: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self.artifacts_written = 0

    # -- what the attempt asks for -----------------------------------------------------

    def put_artifact(self, batch_uid: str, meta: dict[str, Any]) -> None:
        self._raise_failure()
        self._artifacts.pop(batch_uid, None)  # written again: the last meta, in its new place
        self._artifacts[batch_uid] = meta
        self._kick()

    def save_checkpoint(self, data: dict[str, Any]) -> None:
        """Saved from inside a batch: written with that batch's record, not before it."""
        self._raise_failure()
        self._next_checkpoint = data

    async def record(self, batch: CountedBatch) -> None:
        self._raise_failure()
        self._records.append(batch)
        self._unstored += 1
        if self._next_checkpoint is not None:
            self._checkpoint, self._next_checkpoint = self._next_checkpoint, None
        self._kick()
        if self._unstored >= self._limit and self._flusher is not None:
            await asyncio.shield(self._flusher)
            self._raise_failure()

    async def drain(self) -> None:
        """Everything queued, stored (the attempt's end): raises what a flush raised."""
        if self._next_checkpoint is not None:
            self._checkpoint, self._next_checkpoint = self._next_checkpoint, None
        self._kick()
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._raise_failure()

    @property
    def checkpoint_waiting(self) -> bool:
        return self._checkpoint is not None or self._next_checkpoint is not None

    def take_records(self) -> list[CountedBatch]:
        """The batch records no write has taken yet, handed back to go with the attempt's
        end (:attr:`~flowkit.store.base.RunEnd.batches`), so a short run costs no write of
        them. Nothing while a checkpoint waits: it may be written only after them."""
        if self.checkpoint_waiting or self._failure is not None:
            return []
        records, self._records = self._records, []
        self._unstored -= len(records)
        return records

    def put_back(self, records: list[CountedBatch]) -> None:
        """Records taken for the end that must be written after all (the end did not come,
        or something queued after them): first, in their order."""
        if records:
            self._records[:0] = records
            self._unstored += len(records)
            self._kick()

    async def close(self) -> None:
        """The attempt is over however it ended: stop writing (what is queued is dropped)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(BaseException):
                await flusher

    # -- flushing ----------------------------------------------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _kick(self) -> None:
        if self._flusher is None and self._failure is None and self._queued():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _queued(self) -> bool:
        return bool(self._artifacts or self._records or self._checkpoint is not None)

    async def _flush(self) -> None:
        try:
            while self._queued():
                await self._write_once()
        except Exception as exc:
            self._failure = exc
        finally:
            self._flusher = None

    async def _write_once(self) -> None:
        artifacts, self._artifacts = self._artifacts, {}
        records, self._records = self._records, []
        checkpoint, self._checkpoint = self._checkpoint, None
        if artifacts:
            await self._write_artifacts(artifacts)
        if records:
            firsts = await self._store.record_batches(records)
            self._unstored -= len(records)
            await self._on_counted(list(zip(records, firsts, strict=True)))
        if checkpoint is not None:
            await self._store.save_checkpoint(self._task_id, self._node_id, checkpoint)
            if self._on_checkpoint is not None:
                await self._on_checkpoint(checkpoint)

    async def _write_artifacts(self, artifacts: dict[str, dict[str, Any]]) -> None:
        # Uids this attempt has not stored, of a stream no earlier attempt wrote, are new:
        # one bulk insert. Any other goes one by one (a rewrite keeps its place).
        again = [(uid, meta) for uid, meta in artifacts.items() if uid in self._stored_uids]
        fresh = [(uid, meta) for uid, meta in artifacts.items() if uid not in self._stored_uids]
        if fresh:
            await self._store.put_artifacts(self._task_id, self._node_id, fresh, new=self._new_stream)
        if again:
            await self._store.put_artifacts(self._task_id, self._node_id, again, new=False)
        self._stored_uids.update(artifacts)
        first = self.artifacts_written == 0
        self.artifacts_written += len(artifacts)
        if first and self._on_first_artifact is not None:
            # Streaming readers (start_when: first_batch) may start now.
            await self._on_first_artifact()
