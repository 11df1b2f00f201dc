"""Task and node states, and the status record users read."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}


def apply_fields(record: BaseModel, fields: dict[str, Any]) -> None:
    """Set fields of a status record in place, on the hot path.

    Values come from FlowKit itself, already of the right types, so pydantic's
    per-attribute ``__setattr__`` machinery is skipped; unknown names still fail.
    """
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = frozenset(type(record).model_fields)
    unknown = fields.keys() - names
    if unknown:
        raise AttributeError(f"{type(record).__name__} has no field(s) {sorted(unknown)}")
    record.__dict__.update(fields)


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DEFERRED = "deferred"  # waiting for a retry
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.FINISHED, State.FAILED, State.CANCELLED})


class NodeError(BaseModel):
    code: str
    message: str = ""
    permanent: bool = False


class NodeStatus(BaseModel):
    """One node as users see it (``status.nodes[node_id]``)."""

    node_id: str
    type: str
    status: State = State.QUEUED
    attempts: int = 0
    batches: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    error: NodeError | None = None
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    first_batch_at: float | None = None
    """When the current attempt wrote its first artifact (streaming dependents may start)."""
    worker_losses: int = 0
    """Attempts lost with their worker (crash, SIGTERM, scale-down): not charged to ``retry_policy.max``."""
    note: str | None = None
    """Why the node waits, e.g. "no live worker for role 'x'"."""
    attempt_base: int = 0
    """Attempts made before the task was last retried (``retry_task``): the retry budget
    counts from here, and attempt numbers go on growing so late messages stay stale."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        if end is None:
            import time

            end = time.time()
        return max(0.0, end - self.started_at)


class TaskStatus(BaseModel):
    """A task and its nodes: what ``coordinator.get_status`` and ``flowkit run --json`` return."""

    task_id: str
    status: State = State.QUEUED
    params: dict[str, Any] = Field(default_factory=dict)
    nodes: dict[str, NodeStatus] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: NodeError | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    owner: str | None = None
    """The coordinator that holds the task's lease (None: waiting to be adopted)."""
    cancel_requested: str | None = None
    """Set by any process (``flowkit cancel``); the owner carries the cancel out."""
    suspended: bool = False
    """No new node starts while set (running ones finish): ``suspend_task`` / ``resume_task``."""
    suspend_requested: bool | None = None
    """What any process last asked for (``suspend_task`` / ``resume_task``); the owner
    carries it out into ``suspended``. None: never asked."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Given at ``create_task`` and never changed: who made the task, e.g. the operator's
    FlowTask namespace and name."""

    def snapshot(self) -> TaskStatus:
        """A copy safe to hand out: node records are copied, their values are replaced
        (never mutated in place) on update, so a shallow copy per node is enough."""
        return self.model_copy(update={"nodes": {k: n.model_copy() for k, n in self.nodes.items()}})

    @property
    def finished(self) -> bool:
        return self.status == State.FINISHED

    def summary(self) -> dict[str, Any]:
        """The JSON shape of ``flowkit run --json``."""
        return {
            "task_id": self.task_id,
            "status": self.status.value,
            "nodes": {
                nid: {
                    "status": n.status.value,
                    "attempts": n.attempts,
                    "batches": n.batches,
                    "metrics": n.metrics,
                    "error": n.error.model_dump() if n.error else None,
                    "duration_sec": n.duration,
                }
                for nid, n in self.nodes.items()
            },
            "result": self.result,
        }
