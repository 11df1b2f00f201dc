"""In-memory store for embedded runs and user tests. Changes wake waiters at once."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import NodeNotFound, TaskNotFound
from ..states import State, TaskStatus, apply_fields
from .base import Artifact


@dataclass
class _Stream:
    artifacts: list[Artifact] = field(default_factory=list)
    by_uid: dict[str, Artifact] = field(default_factory=dict)


@dataclass
class _TaskEntry:
    status: TaskStatus
    graph: dict[str, Any]
    streams: dict[str, _Stream] = field(default_factory=dict)
    batches: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    def __init__(self) -> None:
        self._tasks: dict[str, _TaskEntry] = {}

    def _entry(self, task_id: str) -> _TaskEntry:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFound(task_id) from None

    def _bump(self, entry: _TaskEntry) -> None:
        entry.version += 1
        entry.changed.set()
        entry.changed = asyncio.Event()

    # -- tasks --
    async def create_task(self, status: TaskStatus, graph: dict[str, Any]) -> None:
        self._tasks[status.task_id] = _TaskEntry(status=status.snapshot(), graph=graph)

    async def get_task(self, task_id: str) -> TaskStatus | None:
        entry = self._tasks.get(task_id)
        return entry.status.snapshot() if entry else None

    async def get_graph(self, task_id: str) -> dict[str, Any] | None:
        entry = self._tasks.get(task_id)
        return entry.graph if entry else None

    async def update_task(self, task_id: str, fields: dict[str, Any]) -> None:
        entry = self._entry(task_id)
        apply_fields(entry.status, fields)
        self._bump(entry)

    async def update_node(self, task_id: str, node_id: str, fields: dict[str, Any]) -> None:
        entry = self._entry(task_id)
        node = entry.status.nodes.get(node_id)
        if node is None:
            raise NodeNotFound(task_id, node_id)
        apply_fields(node, fields)
        self._bump(entry)

    async def node_state(self, task_id: str, node_id: str) -> State | None:
        entry = self._tasks.get(task_id)
        node = entry.status.nodes.get(node_id) if entry else None
        return node.status if node else None

    async def list_tasks(self, states: set[State] | None = None, limit: int = 100) -> list[TaskStatus]:
        found = [e.status for e in self._tasks.values() if states is None or e.status.status in states]
        return [s.snapshot() for s in found[-limit:]]

    # -- artifacts --
    async def put_artifact(
        self, task_id: str, node_id: str, batch_uid: str, meta: dict[str, Any]
    ) -> Artifact:
        entry = self._entry(task_id)
        stream = entry.streams.setdefault(node_id, _Stream())
        existing = stream.by_uid.get(batch_uid)
        if existing is not None:  # a re-run rewrites its batch in place: still one artifact
            # Replaced, never mutated: artifacts already handed out stay as they were read.
            rewritten = existing.model_copy(update={"meta": meta})
            stream.artifacts[existing.seq - 1] = stream.by_uid[batch_uid] = rewritten
            self._bump(entry)
            return rewritten
        artifact = Artifact(
            task_id=task_id, node_id=node_id, batch_uid=batch_uid, meta=meta, seq=len(stream.artifacts) + 1
        )
        stream.artifacts.append(artifact)
        stream.by_uid[batch_uid] = artifact
        self._bump(entry)
        return artifact

    async def complete_artifacts(self, task_id: str, node_id: str) -> None:
        entry = self._entry(task_id)
        stream = entry.streams.get(node_id, _Stream())
        for i, artifact in enumerate(stream.artifacts):
            done = artifact.model_copy(update={"status": "complete"})
            stream.artifacts[i] = stream.by_uid[artifact.batch_uid] = done
        self._bump(entry)

    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]:
        stream = self._entry(task_id).streams.get(node_id)
        return list(stream.artifacts[after:]) if stream else []

    # -- batches and checkpoints --
    async def record_batch(
        self, task_id: str, node_id: str, batch_uid: str, metrics: dict[str, float]
    ) -> bool:
        done = self._entry(task_id).batches.setdefault(node_id, {})
        if batch_uid in done:
            return False
        done[batch_uid] = metrics
        return True

    async def batch_records(self, task_id: str, node_id: str) -> dict[str, dict[str, float]]:
        return dict(self._entry(task_id).batches.get(node_id, {}))

    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None:
        self._entry(task_id).checkpoints[node_id] = dict(data)

    async def load_checkpoint(self, task_id: str, node_id: str) -> dict[str, Any] | None:
        data = self._entry(task_id).checkpoints.get(node_id)
        return dict(data) if data is not None else None

    # -- change notification --
    def version(self, task_id: str) -> int:
        entry = self._tasks.get(task_id)
        return entry.version if entry else 0

    async def wait_changed(self, task_id: str, since: int, timeout: float) -> int:
        entry = self._entry(task_id)
        if entry.version == since:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.changed.wait(), timeout)
        return entry.version
