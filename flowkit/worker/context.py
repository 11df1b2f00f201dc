"""The per-run context handed to handlers: ids, cancellation, artifacts, checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..store.base import Store
from .batch_writes import BatchWrites


class ArtifactsWriter:
    """Writes a node's artifacts. Partial ones are visible to streaming readers as soon
    as they are stored: at once, or with the attempt's next group of writes
    (:class:`~flowkit.worker.batch_writes.BatchWrites`) when the run writes behind."""

    def __init__(
        self,
        store: Store,
        task_id: str,
        node_id: str,
        on_first_write: Callable[[], Awaitable[None]] | None = None,
        *,
        first_attempt: bool = False,
    ) -> None:
        """``first_attempt``: no earlier attempt of the node can have written artifacts."""
        self._store = store
        self.first_attempt = first_attempt
        self._task_id = task_id
        self._node_id = node_id
        self.on_first_write = on_first_write
        self.behind: BatchWrites | None = None
        """Set by the attempt that writes behind."""
        self._written = 0

    @property
    def written(self) -> int:
        return self.behind.artifacts_written if self.behind is not None else self._written

    async def upsert_partial(self, batch_uid: str, meta: dict[str, Any]) -> dict[str, str]:
        """Write (or rewrite) the artifact of one batch; returns its reference."""
        if not isinstance(meta, dict):
            raise TypeError(f"artifact meta must be a dict (got {type(meta).__name__})")
        if self.behind is not None:
            uid = str(batch_uid)
            self.behind.put_artifact(uid, meta)
            return {"task_id": self._task_id, "node_id": self._node_id, "batch_uid": uid}  # ArtifactRef's
        artifact = await self._store.put_artifact(self._task_id, self._node_id, str(batch_uid), meta)
        self._written += 1
        if self._written == 1 and self.on_first_write is not None:
            # Streaming readers (start_when: first_batch) may start now, not after this batch.
            await self.on_first_write()
        return artifact.ref().model_dump()

    async def complete(self) -> None:
        """Mark every artifact of the node complete (done by the runtime after finalize);
        nothing to do, and no store round trip, when none can exist."""
        if self.written or not self.first_attempt:
            await self._store.complete_artifacts(self._task_id, self._node_id)


@dataclass
class RunContext:
    """What a handler knows about the run it is part of."""

    task_id: str
    node_id: str
    attempt: int
    role: str
    worker_id: str
    params: dict[str, Any]
    artifacts_writer: ArtifactsWriter
    store: Store
    checkpoint: dict[str, Any] | None = None
    """The last checkpoint saved by an earlier attempt of this node, if any."""
    cancel_flag: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_meta: dict[str, Any] = field(default_factory=dict)
    processed_count: int = 0
    skipped_count: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    on_checkpoint: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    """Told of each checkpoint after it is saved (the worker mirrors it in ``worker_states``)."""

    @property
    def total_processed(self) -> int:
        return self.processed_count

    async def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Persist progress; a later attempt of this node finds it in ``ctx.checkpoint``."""
        self.checkpoint = dict(checkpoint)
        behind = self.artifacts_writer.behind
        if behind is not None:  # stored after the records of the batches before it
            behind.save_checkpoint(self.checkpoint)
            return
        await self.store.save_checkpoint(self.task_id, self.node_id, self.checkpoint)
        if self.on_checkpoint is not None:
            await self.on_checkpoint(self.checkpoint)
