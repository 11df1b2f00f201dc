"""A task's status as a FlowTask's ``status``: phase, progress, conditions, bounded nodes.

Pure functions, no I/O. The status stays small however large the graph: at most
:data:`MAX_NODES` entries in ``nodes`` (failed first, then running, retrying and
cancelling, then the rest in graph order), counts per state for everything, and
``detail`` saying where the full per-node record lives (MongoDB, ``flowkit status``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowkit.states import NodeStatus, State, TaskStatus

MAX_NODES = 50
MESSAGE_LIMIT = 300

PENDING, RUNNING, SUSPENDED = "Pending", "Running", "Suspended"
SUCCEEDED, FAILED, CANCELLED, INVALID = "Succeeded", "Failed", "Cancelled", "Invalid"
FINISHED_PHASES = frozenset({SUCCEEDED, FAILED, CANCELLED, INVALID})
DEADLINE_EXCEEDED = "DeadlineExceeded"

# Which nodes earn a place in the bounded status first.
_NODE_ORDER = {
    State.FAILED: 0,
    State.RUNNING: 1,
    State.DEFERRED: 2,
    State.CANCELLING: 3,
    State.CANCELLED: 4,
    State.QUEUED: 5,
    State.FINISHED: 6,
}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass
class Facts:
    """What the operator knows besides the task: kept per FlowTask by the mirror."""

    generation: int | None = None
    observed_retry: int = 0
    max_attempts: dict[str, int] = field(default_factory=dict)
    """node id -> retry_policy.max (attempts in total), for "attempt 3/3" in messages."""
    started_at: float | None = None
    deadline_exceeded: bool = False
    deadline_seconds: float | None = None
    ttl_seconds: float | None = None


def phase_of(task: TaskStatus, facts: Facts) -> str:
    state = task.status
    if state == State.FINISHED:
        return SUCCEEDED
    if state == State.FAILED:
        return FAILED
    if state == State.CANCELLED:
        return FAILED if facts.deadline_exceeded else CANCELLED
    if task.suspended:
        return SUSPENDED
    if state == State.QUEUED and not any(n.status != State.QUEUED for n in task.nodes.values()):
        return PENDING
    return RUNNING


def node_failure(node: NodeStatus, max_attempts: int | None) -> str:
    """``node 'load' failed: TimeoutError (attempt 3/3)``."""
    code = node.error.code if node.error is not None else "error"
    of = f"/{max_attempts}" if max_attempts else ""
    return f"node '{node.node_id}' failed: {code} (attempt {node.attempts}{of})"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def _message(task: TaskStatus, phase: str, facts: Facts, counts: Counter[str]) -> tuple[str, str]:
    """(reason, one-line message)."""
    total = len(task.nodes)
    done = counts.get(State.FINISHED.value, 0)
    failed = [n for n in task.nodes.values() if n.status == State.FAILED]
    if phase == SUCCEEDED:
        return "Succeeded", f"all {total} nodes finished"
    if phase == FAILED and facts.deadline_exceeded:
        return (
            DEADLINE_EXCEEDED,
            f"active deadline exceeded: task cancelled with {done}/{total} nodes finished",
        )
    if phase == FAILED:
        if failed:
            first = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            detail = f": {first.error.message}" if first.error is not None and first.error.message else ""
            return "NodeFailed", node_failure(first, facts.max_attempts.get(first.node_id)) + more + detail
        code = task.error.code if task.error is not None else "failed"
        return "Failed", f"task failed: {code}"
    if phase == CANCELLED:
        why = task.error.message if task.error is not None and task.error.message else "cancelled"
        return "Cancelled", f"cancelled: {why}"
    running = counts.get(State.RUNNING.value, 0)
    if phase == SUSPENDED:
        return "Suspended", f"suspended with {done}/{total} nodes finished, {running} still running"
    if phase == PENDING:
        notes = [n.note for n in task.nodes.values() if n.note]
        return "Pending", notes[0] if notes else "waiting for the first node to start"
    retrying = [n for n in task.nodes.values() if n.status == State.DEFERRED and n.error is not None]
    if task.status == State.CANCELLING:
        return "Cancelling", f"cancelling: {running} nodes still stopping"
    if retrying:
        node = retrying[0]
        return "Retrying", node_failure(node, facts.max_attempts.get(node.node_id)) + ", retrying"
    notes = [n.note for n in task.nodes.values() if n.note and n.status == State.QUEUED]
    tail = f"; {notes[0]}" if notes else ""
    return "Running", f"{done}/{total} nodes finished, {running} running{tail}"


def _condition(
    kind: str, on: bool, reason: str, message: str, previous: dict[str, dict[str, Any]], now: str
) -> dict[str, Any]:
    status = "True" if on else "False"
    before = previous.get(kind)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message if on else "",
        "lastTransitionTime": since or now,
    }


def conditions(
    phase: str, reason: str, message: str, previous: list[dict[str, Any]] | None, now: float
) -> list[dict[str, Any]]:
    """Succeeded, Failed and Suspended; a condition's lastTransitionTime moves only when its status does."""
    before = {c.get("type", ""): c for c in previous or []}
    stamp = rfc3339(now) or ""
    return [
        _condition(SUCCEEDED, phase == SUCCEEDED, reason, message, before, stamp),
        _condition(FAILED, phase in (FAILED, INVALID), reason, message, before, stamp),
        _condition(SUSPENDED, phase == SUSPENDED, reason, message, before, stamp),
    ]


def _node_entry(node: NodeStatus) -> dict[str, Any]:
    entry: dict[str, Any] = {"state": node.status.value, "attempts": node.attempts, "batches": node.batches}
    if node.started_at is not None:
        entry["startedAt"] = rfc3339(node.started_at)
    if node.finished_at is not None:
        entry["finishedAt"] = rfc3339(node.finished_at)
    if node.error is not None:
        entry["error"] = _one_line(
            f"{node.error.code}: {node.error.message}" if node.error.message else node.error.code
        )
    return entry


def bounded_nodes(task: TaskStatus, limit: int = MAX_NODES) -> tuple[dict[str, dict[str, Any]], int]:
    """At most ``limit`` nodes (failed, running, retrying first, then graph order); how many were omitted."""
    order = {nid: i for i, nid in enumerate(task.nodes)}
    ranked = sorted(task.nodes.values(), key=lambda n: (_NODE_ORDER.get(n.status, 9), order[n.node_id]))
    kept = ranked[:limit]
    return {n.node_id: _node_entry(n) for n in kept}, len(ranked) - len(kept)


def task_status(
    task: TaskStatus, facts: Facts, previous_conditions: list[dict[str, Any]] | None, now: float
) -> dict[str, Any]:
    """The FlowTask ``status`` for ``task`` (every field the contract names, except ``invalid``)."""
    counts: Counter[str] = Counter(n.status.value for n in task.nodes.values())
    phase = phase_of(task, facts)
    reason, message = _message(task, phase, facts, counts)
    nodes, omitted = bounded_nodes(task)
    finished = task.finished_at if phase in FINISHED_PHASES else None
    return {
        "phase": phase,
        "reason": reason,
        "message": _one_line(message),
        "progress": f"{counts.get(State.FINISHED.value, 0)}/{len(task.nodes)}",
        "taskId": task.task_id,
        "startedAt": rfc3339(facts.started_at if facts.started_at is not None else task.created_at),
        "finishedAt": rfc3339(
            finished if finished is not None else (now if phase in FINISHED_PHASES else None)
        ),
        "observedGeneration": facts.generation,
        "observedRetry": facts.observed_retry,
        "nodeCounts": dict(sorted(counts.items())),
        "nodes": nodes,
        "nodesOmitted": omitted,
        "detail": f"flowkit status {task.task_id} (MongoDB: flowkit_tasks, flowkit_nodes)",
        "conditions": conditions(phase, reason, message, previous_conditions, now),
    }


def invalid_status(problems: list[str], generation: int | None, now: float) -> dict[str, Any]:
    """The status of a FlowTask whose graph the engine refused."""
    message = _one_line(
        f"invalid graph: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    )
    return {
        "phase": INVALID,
        "reason": "InvalidGraph",
        "message": message,
        "invalid": problems,
        "observedGeneration": generation,
        "conditions": conditions(INVALID, "InvalidGraph", message, None, now),
    }
