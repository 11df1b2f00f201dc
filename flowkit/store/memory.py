"""In-memory store for embedded runs and user tests. Changes wake waiters at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import LeaseLost, NodeNotFound, TaskNotFound
from ..states import NodeError, NodeStatus, State, TaskStatus, apply_fields
from .base import (
    BARRED,
    Artifact,
    AttemptInputs,
    CountedBatch,
    Fence,
    RunClaim,
    RunEnd,
    RunRecord,
    RunState,
    barred_run,
)
from .changes import ChangeTracker
from .fields import check_names, task_fields_to_write, worker_state_paths

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    artifacts: list[Artifact] = field(default_factory=list)
    by_uid: dict[str, Artifact] = field(default_factory=dict)
    complete: bool = False
    """Every artifact reads as complete (marked once, not copied one by one)."""


@dataclass
class _TaskEntry:
    status: TaskStatus  # status.owner is the owner; status.cancel_requested stays None
    graph: dict[str, Any]
    fence: int = 0
    cancel: str | None = None  # the requests, kept out of the status as in MongoStore
    suspend: bool | None = None
    streams: dict[str, _Stream] = field(default_factory=dict)
    batches: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[tuple[str, int], RunRecord] = field(default_factory=dict)

    def holds(self, fence: Fence) -> bool:
        return self.status.owner == fence.owner and self.fence == fence.token


def _plain(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) as MongoDB would hand it back: str keys, lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class MemoryStore(ChangeTracker):
    """The :class:`~flowkit.store.base.Store` in this process's memory (one process sees all)."""

    def __init__(self) -> None:
        super().__init__()
        self._tasks: dict[str, _TaskEntry] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._live_until: dict[str, float] = {}  # coordinator id -> until (its liveness)

    def _entry(self, task_id: str) -> _TaskEntry:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFound(task_id) from None

    # -- tasks --
    async def create_task(
        self, status: TaskStatus, graph: dict[str, Any], *, owner: str | None = None, lease_sec: float = 0.0
    ) -> bool:
        """Insert the task; False (nothing changed) if the id exists."""
        if status.task_id in self._tasks:
            return False
        held = status.model_copy(update={"owner": owner, "cancel_requested": None})
        entry = _TaskEntry(status=held.snapshot(), graph=graph, cancel=status.cancel_requested)
        if owner is not None:
            self._keep_alive(owner, time.time() + lease_sec)
            entry.fence = 1
        self._tasks[status.task_id] = entry
        self._bump(status.task_id)
        return True

    async def get_task(self, task_id: str) -> TaskStatus | None:
        entry = self._tasks.get(task_id)
        if entry is None:
            return None
        status = entry.status.snapshot()
        status.cancel_requested = entry.cancel
        status.suspend_requested = entry.suspend
        return status

    async def get_graph(self, task_id: str) -> dict[str, Any] | None:
        entry = self._tasks.get(task_id)
        return entry.graph if entry else None

    async def update_task(self, task_id: str, fields: dict[str, Any], *, fence: Fence | None = None) -> None:
        await self.write_task(task_id, fields, {}, fence=fence)

    async def update_node(
        self, task_id: str, node_id: str, fields: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        await self.write_task(task_id, {}, {node_id: fields}, fence=fence)

    async def write_task(
        self,
        task_id: str,
        task_fields: dict[str, Any],
        node_fields: dict[str, dict[str, Any]],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Set task fields and nodes' fields at once; every check passes before anything is set."""
        task_fields = task_fields_to_write(task_fields, fence)
        check_names(TaskStatus, task_fields)
        for fields in node_fields.values():
            check_names(NodeStatus, fields)
        entry = self._entry(task_id)
        nodes = entry.status.nodes
        missing = next((node_id for node_id in node_fields if node_id not in nodes), None)
        if missing is not None:
            raise NodeNotFound(task_id, missing)
        if fence is not None and not entry.holds(fence):
            raise LeaseLost(task_id, fence.owner, fence.token)
        apply_fields(entry.status, task_fields)
        for node_id, fields in node_fields.items():
            apply_fields(nodes[node_id], fields)
        self._bump(task_id)

    async def reopen_task(
        self, task_id: str, task_fields: dict[str, Any], node_fields: dict[str, dict[str, Any]]
    ) -> bool:
        entry = self._tasks.get(task_id)
        if entry is None or entry.status.status not in (State.FAILED, State.CANCELLED):
            return False
        await self.write_task(task_id, task_fields, node_fields)
        entry.status.owner, entry.cancel = None, None
        return True

    async def delete_task(self, task_id: str) -> bool:
        if self._tasks.pop(task_id, None) is None:
            return False
        self._bump(task_id)
        return True

    async def request_cancel(self, task_id: str, reason: str) -> None:
        self._entry(task_id).cancel = reason
        self._bump(task_id)

    async def request_suspend(self, task_id: str, suspended: bool) -> None:
        self._entry(task_id).suspend = suspended
        self._bump(task_id)

    async def cancel_request(self, task_id: str) -> str | None:
        entry = self._tasks.get(task_id)
        return entry.cancel if entry else None

    # -- ownership: fencing tokens per task, liveness per coordinator --
    def _keep_alive(self, coordinator_id: str, until: float) -> None:
        self._live_until[coordinator_id] = max(until, self._live_until.get(coordinator_id, until))

    def _claimable(self, entry: _TaskEntry, now: float, claimer: str | None) -> bool:
        """Not terminal, and unowned, of ``claimer`` or of a coordinator not live at ``now``."""
        owner = entry.status.owner
        if entry.status.status.terminal:
            return False
        return owner is None or owner == claimer or self._live_until.get(owner, float("-inf")) < now

    async def claim_task(self, task_id: str, owner: str, lease_sec: float, now: float) -> Fence | None:
        entry = self._tasks.get(task_id)
        if entry is None or not self._claimable(entry, now, owner):
            return None
        self._keep_alive(owner, now + lease_sec)
        entry.status.owner = owner
        entry.fence += 1
        self._bump(task_id)
        return Fence(owner, entry.fence)

    async def renew_leases(self, owner: str, lease_sec: float, now: float) -> set[str]:
        self._live_until[owner] = now + lease_sec
        return {
            tid for tid, e in self._tasks.items() if e.status.owner == owner and not e.status.status.terminal
        }

    async def release_task(self, fence: Fence, task_id: str) -> None:
        entry = self._tasks.get(task_id)
        if entry is not None and entry.holds(fence):
            entry.status.owner = None
            self._bump(task_id)

    async def claimable_tasks(self, now: float, limit: int = 100, *, owner: str | None = None) -> list[str]:
        """Oldest first."""
        found = [tid for tid, entry in self._tasks.items() if self._claimable(entry, now, owner)]
        return found[:limit]

    async def node_state(self, task_id: str, node_id: str) -> State | None:
        entry = self._tasks.get(task_id)
        node = entry.status.nodes.get(node_id) if entry else None
        return node.status if node else None

    async def node_states(self, keys: Sequence[tuple[str, str]]) -> list[State | None]:
        return [await self.node_state(task_id, node_id) for task_id, node_id in keys]

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
            self._bump(task_id)
            return rewritten
        # Built without validation: every field is already of its type (a hot path embedded).
        artifact = Artifact.model_construct(
            task_id=task_id, node_id=node_id, batch_uid=batch_uid, meta=meta, seq=len(stream.artifacts) + 1
        )
        stream.artifacts.append(artifact)
        stream.by_uid[batch_uid] = artifact
        self._bump(task_id)
        return artifact

    async def put_artifacts(
        self, task_id: str, node_id: str, items: Sequence[tuple[str, dict[str, Any]]], *, new: bool
    ) -> None:
        for batch_uid, meta in items:
            await self.put_artifact(task_id, node_id, batch_uid, meta)

    async def complete_artifacts(self, task_id: str, node_id: str) -> None:
        entry = self._entry(task_id)
        entry.streams.setdefault(node_id, _Stream()).complete = True
        self._bump(task_id)

    async def next_artifacts(self, task_id: str, node_id: str, after: int, limit: int) -> list[Artifact]:
        return self._artifacts_read(task_id, node_id, after, after + limit)

    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]:
        return self._artifacts_read(task_id, node_id, after, None)

    def _artifacts_read(self, task_id: str, node_id: str, after: int, until: int | None) -> list[Artifact]:
        stream = self._entry(task_id).streams.get(node_id)
        if stream is None:
            return []
        if not stream.complete:
            return stream.artifacts[after:until]
        return [a.model_copy(update={"status": "complete"}) for a in stream.artifacts[after:until]]

    # -- batches and checkpoints --
    async def record_batch(
        self, task_id: str, node_id: str, batch_uid: str, metrics: dict[str, float]
    ) -> bool:
        done = self._entry(task_id).batches.setdefault(node_id, {})
        if batch_uid in done:
            return False
        done[batch_uid] = metrics
        self._bump(task_id)
        return True

    async def record_batches(self, batches: Sequence[CountedBatch]) -> list[bool]:
        for batch in batches:
            self._entry(batch.task_id)  # raises before anything is counted
        return [await self.record_batch(b.task_id, b.node_id, b.batch_uid, b.metrics) for b in batches]

    async def batch_records(self, task_id: str, node_id: str) -> dict[str, dict[str, float]]:
        return dict(self._entry(task_id).batches.get(node_id, {}))

    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None:
        self._entry(task_id).checkpoints[node_id] = dict(data)

    async def load_checkpoint(self, task_id: str, node_id: str) -> dict[str, Any] | None:
        data = self._entry(task_id).checkpoints.get(node_id)
        return dict(data) if data is not None else None

    async def attempt_inputs(self, task_id: str, node_id: str) -> AttemptInputs:
        return AttemptInputs(
            await self.node_state(task_id, node_id),
            await self.load_checkpoint(task_id, node_id),
            set(self._entry(task_id).batches.get(node_id, {})),
        )

    # -- runs --
    async def claim_run(
        self, task_id: str, node_id: str, attempt: int, worker_id: str, lease_sec: float, now: float
    ) -> bool:
        """First claim, or the same worker again (a redelivered command: its lease is renewed)."""
        runs = self._entry(task_id).runs
        run = runs.get((node_id, attempt))
        if run is None:
            runs[node_id, attempt] = RunRecord(
                task_id=task_id,
                node_id=node_id,
                attempt=attempt,
                worker_id=worker_id,
                lease_until=now + lease_sec,
                accepted_at=now,
            )
            return True
        if run.worker_id != worker_id or run.state != "running":
            return False
        runs[node_id, attempt] = run.model_copy(update={"lease_until": now + lease_sec})
        return True

    async def bar_run(self, task_id: str, node_id: str, attempt: int, now: float) -> bool:
        runs = self._entry(task_id).runs
        run = runs.get((node_id, attempt))
        if run is None:
            runs[node_id, attempt] = barred_run(task_id, node_id, attempt, now)
            return True
        return run.worker_id == BARRED

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[bool]:
        for claim in claims:
            self._entry(claim.task_id)
        return [
            await self.claim_run(c.task_id, c.node_id, c.attempt, c.worker_id, c.lease_sec, c.now)
            for c in claims
        ]

    async def renew_runs(
        self, worker_id: str, runs: Iterable[tuple[str, str, int]], lease_sec: float, now: float
    ) -> int:
        renewed = 0
        for task_id, node_id, attempt in runs:
            entry = self._tasks.get(task_id)
            run = entry.runs.get((node_id, attempt)) if entry is not None else None
            if (
                entry is not None
                and run is not None
                and run.worker_id == worker_id
                and run.state == "running"
            ):
                entry.runs[(node_id, attempt)] = run.model_copy(update={"lease_until": now + lease_sec})
                renewed += 1
        return renewed

    async def end_run(
        self,
        task_id: str,
        node_id: str,
        attempt: int,
        worker_id: str,
        state: RunState,
        *,
        metrics: dict[str, float] | None = None,
        error: NodeError | None = None,
        now: float,
    ) -> bool:
        if state == "running":
            raise ValueError("end_run needs a final state, not 'running'")
        runs = self._entry(task_id).runs
        run = runs.get((node_id, attempt))
        if run is None or run.worker_id != worker_id:
            return False
        if run.state != "running":
            return (run.state, run.ended_at) == (state, now)  # the same outcome again: a retry
        ended = {"state": state, "ended_at": now, "metrics": dict(metrics or {}), "error": error}
        runs[node_id, attempt] = run.model_copy(update=ended)
        return True

    async def end_runs(self, ends: Sequence[RunEnd]) -> list[bool]:
        for end in ends:
            self._entry(end.task_id)
        recorded = []
        for e in ends:
            ended = await self.end_run(
                *(e.task_id, e.node_id, e.attempt, e.worker_id, e.state),
                metrics=e.metrics,
                error=e.error,
                now=e.now,
            )
            if ended and e.batches:
                await self.record_batches(e.batches)
            recorded.append(ended)
        return recorded

    async def get_runs(self, task_id: str) -> list[RunRecord]:
        """Sorted by node id, then attempt."""
        runs = self._entry(task_id).runs
        return [runs[key].model_copy(deep=True) for key in sorted(runs)]

    async def get_run(self, task_id: str, node_id: str, attempt: int) -> RunRecord | None:
        run = self._entry(task_id).runs.get((node_id, attempt))
        return run.model_copy(deep=True) if run is not None else None

    # -- worker states --
    async def set_worker_state(self, worker_id: str, fields: dict[str, Any]) -> None:
        paths = worker_state_paths(fields)
        doc = self._workers.get(worker_id, {"worker_id": worker_id})
        # Every path checked before anything is set: a refused update changes nothing.
        for path in paths:
            parent: Any = doc
            for depth, name in enumerate(path[:-1]):
                parent = parent.get(name, {})
                if not isinstance(parent, dict):
                    raise ValueError(
                        f"worker state key {'.'.join(path)!r}: {'.'.join(path[: depth + 1])!r} "
                        "is not a mapping"
                    )
        for path, value in zip(paths, fields.values(), strict=True):
            parent = doc
            for name in path[:-1]:
                parent = parent.setdefault(name, {})
            parent[path[-1]] = _plain(value)
        doc["updated_at"] = time.time()
        self._workers[worker_id] = doc

    async def get_worker_state(self, worker_id: str) -> dict[str, Any] | None:
        doc = self._workers.get(worker_id)
        return _plain(doc) if doc is not None else None

    async def list_worker_states(self) -> list[dict[str, Any]]:
        """Sorted by worker id."""
        return [_plain(self._workers[worker_id]) for worker_id in sorted(self._workers)]

    # -- change notification --
    async def wait_changed(self, task_id: str, since: int, timeout: float) -> int:
        self._entry(task_id)
        return await self._wait_version(task_id, since, timeout)
