"""The store interface: tasks with per-node state, artifacts, batch records, checkpoints.

Every write is a single-record operation that is safe to repeat (idempotent upserts
keyed by task, node and batch uid), so the same calls map onto single-document
conditional updates in MongoDB.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ..states import State, TaskStatus


class ArtifactRef(BaseModel):
    task_id: str
    node_id: str
    batch_uid: str


class Artifact(BaseModel):
    """One output of a node: written per batch (partial), complete once the node finishes."""

    task_id: str
    node_id: str
    batch_uid: str
    meta: dict[str, Any] = Field(default_factory=dict)
    status: Literal["partial", "complete"] = "partial"
    seq: int = 0
    """Position in the node's artifact stream, for readers that resume after a cursor."""

    def ref(self) -> ArtifactRef:
        return ArtifactRef(task_id=self.task_id, node_id=self.node_id, batch_uid=self.batch_uid)


class Store(Protocol):
    # -- tasks --
    async def create_task(self, status: TaskStatus, graph: dict[str, Any]) -> None: ...
    async def get_task(self, task_id: str) -> TaskStatus | None: ...
    async def get_graph(self, task_id: str) -> dict[str, Any] | None: ...
    async def update_task(self, task_id: str, fields: dict[str, Any]) -> None: ...
    async def update_node(self, task_id: str, node_id: str, fields: dict[str, Any]) -> None: ...
    async def node_state(self, task_id: str, node_id: str) -> State | None: ...
    async def list_tasks(self, states: set[State] | None = None, limit: int = 100) -> list[TaskStatus]: ...

    # -- artifacts --
    async def put_artifact(
        self, task_id: str, node_id: str, batch_uid: str, meta: dict[str, Any]
    ) -> Artifact: ...
    async def complete_artifacts(self, task_id: str, node_id: str) -> None: ...
    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]: ...

    # -- batches (exactly-once accounting) and checkpoints --
    async def record_batch(
        self, task_id: str, node_id: str, batch_uid: str, metrics: dict[str, float]
    ) -> bool: ...
    async def batch_records(self, task_id: str, node_id: str) -> dict[str, dict[str, float]]: ...
    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None: ...
    async def load_checkpoint(self, task_id: str, node_id: str) -> dict[str, Any] | None: ...

    # -- change notification (readers of streaming artifacts wait on this) --
    def version(self, task_id: str) -> int: ...
    async def wait_changed(self, task_id: str, since: int, timeout: float) -> int: ...
