"""Scheduling decisions for one task: pure logic, no I/O, no clock.

The coordinator feeds events in (a node started, wrote its first batch, finished,
failed, a retry is due, the task is cancelled) and carries out the actions that come
back. Each event touches only the node and its direct dependents, so a task's cost
grows linearly with its nodes and edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..graph import GraphSpec, NodeSpec
from ..states import NodeError, NodeStatus, State


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Start ``attempt`` of the node (on a worker, or in the coordinator for functions)."""

    node_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryLater:
    node_id: str
    attempt: int
    delay_sec: float


@dataclass(frozen=True, slots=True)
class StopRunning:
    """Tell the worker running this attempt to stop (cancel or upstream failure)."""

    node_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class NodeChanged:
    node_id: str
    fields: dict[str, object]
    may_wait: bool = False
    """The store may learn it a little later (see ``Outbox``): what the worker's records
    already hold (an attempt started, its first batch), never an outcome."""


@dataclass(frozen=True, slots=True)
class TaskEnded:
    state: State


@dataclass(frozen=True, slots=True)
class TaskSuspended:
    """The task was suspended (True) or resumed (False)."""

    suspended: bool


Action = Dispatch | RetryLater | StopRunning | NodeChanged | TaskEnded | TaskSuspended


@dataclass(slots=True)
class _Node:
    spec: NodeSpec
    required: int
    state: State = State.QUEUED
    attempt: int = 0
    produced: bool = False  # wrote its first batch
    started_by: set[str] = field(default_factory=set)  # deps counted towards starting
    dead_deps: int = 0  # deps that failed or were cancelled
    dependents: list[str] = field(default_factory=list)
    closed: bool = False  # reached a terminal state and was counted as such
    losses: int = 0  # attempts lost with their worker: not charged to retry_policy.max
    base: int = 0  # attempts made before the task was retried: not charged either

    @property
    def streaming(self) -> bool:
        return self.spec.io.start_when == "first_batch"


class Scheduler:
    """The state machine of one task's nodes."""

    def __init__(self, graph: GraphSpec) -> None:
        self.nodes: dict[str, _Node] = {}
        for spec in graph.nodes:
            self.nodes[spec.node_id] = _Node(spec, spec.fan_in_rule.required(len(spec.depends_on)))
        for spec in graph.nodes:
            for dep in spec.depends_on:
                self.nodes[dep].dependents.append(spec.node_id)
        self.open = len(self.nodes)
        self.state = State.QUEUED
        self.any_failed = False
        self.suspended = False
        self.held: list[str] = []  # ready to start, held back while suspended (in order)

    # -- events --------------------------------------------------------------------

    def start(self) -> list[Action]:
        self.state = State.RUNNING
        out: list[Action] = []
        for node in self.nodes.values():
            if node.required == 0:
                self._dispatch(node, out)
        return out

    def node_started(self, node_id: str, attempt: int, worker_id: str, now: float) -> list[Action]:
        node = self._current(node_id, attempt)
        if node is None or node.state != State.QUEUED:
            return []
        node.state = State.RUNNING
        fields: dict[str, object] = {"status": State.RUNNING, "worker_id": worker_id}
        if attempt == 1:
            fields["started_at"] = now
        return [NodeChanged(node_id, fields, may_wait=True)]

    def first_batch(self, node_id: str, attempt: int, now: float = 0.0) -> list[Action]:
        node = self._current(node_id, attempt)
        if node is None or node.produced:
            return []
        node.produced = True
        out: list[Action] = [NodeChanged(node_id, {"first_batch_at": now}, may_wait=True)]
        for child_id in node.dependents:
            child = self.nodes[child_id]
            if child.streaming:
                self._satisfy(child, node_id, out)
        return out

    def node_finished(self, node_id: str, attempt: int, now: float) -> list[Action]:
        node = self._current(node_id, attempt)
        if node is None or node.state.terminal or self.state == State.CANCELLING:
            return self._maybe_cancelled(node, State.FINISHED, now)
        out: list[Action] = [
            NodeChanged(node_id, {"status": State.FINISHED, "finished_at": now, "error": None})
        ]
        self._close(node, State.FINISHED, out)
        for child_id in node.dependents:
            self._satisfy(self.nodes[child_id], node_id, out)
        return self._settle(out)

    def node_failed(self, node_id: str, attempt: int, error: NodeError, now: float) -> list[Action]:
        node = self._current(node_id, attempt)
        if node is None or node.state.terminal or self.state == State.CANCELLING:
            return self._maybe_cancelled(node, State.FAILED, now)
        policy = node.spec.retry_policy
        permanent = error.permanent or error.code in policy.permanent_on
        out: list[Action] = []
        if not permanent and attempt - node.losses - node.base < policy.max:
            node.state = State.DEFERRED
            out.append(
                NodeChanged(
                    node_id, {"status": State.DEFERRED, "error": error, "retry_at": now + policy.backoff_sec}
                )
            )
            out.append(RetryLater(node_id, attempt + 1, policy.backoff_sec))
            return out
        error = error.model_copy(update={"permanent": permanent})
        self._fail(node, error, now, out)
        return self._settle(out)

    def node_lost(self, node_id: str, attempt: int, why: str, max_losses: int, now: float) -> list[Action]:
        """The attempt's worker is gone (crash, shutdown, scale-down): run it again at once,
        without using up the handler's retries, up to ``max_losses`` times."""
        node = self._current(node_id, attempt)
        if node is None or node.state not in (State.QUEUED, State.RUNNING, State.CANCELLING):
            return []
        if node.state == State.CANCELLING:
            return self.node_cancelled(node_id, attempt, now)
        node.losses += 1
        out: list[Action] = []
        if node.losses > max_losses:
            error = NodeError(
                code="worker_lost",
                message=f"lost its worker {node.losses} times (last: {why}); "
                f"max_worker_losses is {max_losses}",
                permanent=True,
            )
            self._fail(node, error, now, out)
            return self._settle(out)
        # The worker may only be cut off, not dead: tell the old attempt to stop, so a
        # zombie frees its slot (a streaming reader would otherwise wait there forever).
        out.append(StopRunning(node_id, attempt, f"superseded: {why}"))
        out.append(NodeChanged(node_id, {"worker_losses": node.losses}))
        self._dispatch(node, out, started=True)
        return out

    def retry_due(self, node_id: str, attempt: int) -> list[Action]:
        node = self.nodes[node_id]
        if node.state != State.DEFERRED or node.attempt != attempt - 1:
            return []
        out: list[Action] = []
        self._dispatch(node, out)
        return out

    def suspend(self) -> list[Action]:
        """Start no new node (a first attempt or a retry) until :meth:`resume`; running
        ones go on, and one that loses its worker is run again (it had started)."""
        if self.suspended or self.state.terminal:
            return []
        self.suspended = True
        return [TaskSuspended(True)]

    def resume(self) -> list[Action]:
        """Start what was held back, in the order it became ready."""
        if not self.suspended:
            return []
        self.suspended = False
        out: list[Action] = [TaskSuspended(False)]
        held, self.held = self.held, []
        for node_id in held:
            node = self.nodes[node_id]
            if node.state in (State.QUEUED, State.DEFERRED) and not node.closed:
                self._dispatch(node, out)
        return out

    def node_cancelled(self, node_id: str, attempt: int, now: float) -> list[Action]:
        node = self._current(node_id, attempt)
        if node is None or node.state.terminal:
            return []
        out: list[Action] = []
        if self.state != State.CANCELLING:
            # Stopped on its own (e.g. a cancel flag in the store), not by a task cancel:
            # an abnormal end, so it fails, and so do dependents that can no longer start.
            error = NodeError(
                code="cancelled", message="the node was cancelled outside a task cancel", permanent=True
            )
            self._fail(node, error, now, out)
            return self._settle(out)
        out.append(NodeChanged(node_id, {"status": State.CANCELLED, "finished_at": now}))
        self._close(node, State.CANCELLED, out)
        return self._settle(out)

    def cancel(self, reason: str, now: float) -> list[Action]:
        """Cancel the task: waiting nodes at once, running ones once their worker stops."""
        if self.state.terminal or self.state == State.CANCELLING:
            return []
        self.state = State.CANCELLING
        out: list[Action] = []
        for node in self.nodes.values():
            if node.state.terminal:
                continue
            if node.state == State.RUNNING or (node.state == State.QUEUED and node.attempt > node.base):
                node.state = State.CANCELLING
                out.append(NodeChanged(node.spec.node_id, {"status": State.CANCELLING}))
                out.append(StopRunning(node.spec.node_id, node.attempt, reason))
            else:
                out.append(NodeChanged(node.spec.node_id, {"status": State.CANCELLED, "finished_at": now}))
                self._close(node, State.CANCELLED, out)
        return self._settle(out)

    def restore(
        self, task_state: State, stored: Mapping[str, NodeStatus], now: float, *, suspended: bool = False
    ) -> list[Action]:
        """Rebuild from a task's stored nodes (another coordinator held it) and return what
        must happen to carry on: commands sent again, retries rescheduled, nodes that were
        ready but not yet dispatched (or held back, ``suspended``), cancels repeated, or
        the task's end."""
        self.state = task_state if task_state != State.QUEUED else State.RUNNING
        self.suspended = suspended
        for node_id, node in self.nodes.items():
            saved = stored[node_id]
            node.state, node.attempt, node.losses = saved.status, saved.attempts, saved.worker_losses
            node.base = saved.attempt_base
            node.produced = saved.first_batch_at is not None
            if node.state.terminal:
                node.closed = True
                self.open -= 1
                self.any_failed = self.any_failed or node.state == State.FAILED
        for node in self.nodes.values():
            for dep_id in node.spec.depends_on:
                dep = self.nodes[dep_id]
                if dep.state == State.FINISHED or (node.streaming and dep.produced):
                    node.started_by.add(dep_id)
                elif dep.state in (State.FAILED, State.CANCELLED):
                    node.dead_deps += 1
        if self.state == State.CANCELLING:  # cancel again: the stops may not have been sent
            self.state = State.RUNNING
            for node in self.nodes.values():
                if node.state == State.CANCELLING:
                    node.state = State.RUNNING
            return self.cancel("cancelled", now)
        out: list[Action] = []
        for node in self.nodes.values():
            self._resume(node, stored[node.spec.node_id], now, out)
        return self._settle(out)

    def _resume(self, node: _Node, saved: NodeStatus, now: float, out: list[Action]) -> None:
        node_id = node.spec.node_id
        if node.state == State.DEFERRED:
            out.append(RetryLater(node_id, node.attempt + 1, max(0.0, (saved.retry_at or now) - now)))
        elif node.state == State.QUEUED and node.attempt > node.base:
            out.append(Dispatch(node_id, node.attempt))  # sent, maybe never received: again
        elif node.state == State.QUEUED and len(node.started_by) >= node.required:
            self._dispatch(node, out)
        elif node.state == State.RUNNING and node.spec.is_coordinator_fn:
            out.append(Dispatch(node_id, node.attempt))  # it ran in the coordinator that died

    # -- internals -----------------------------------------------------------------

    def _current(self, node_id: str, attempt: int) -> _Node | None:
        """The node if ``attempt`` is its current one; stale or unknown messages are ignored."""
        node = self.nodes.get(node_id)
        if node is None or node.attempt != attempt:
            return None
        return node

    def _maybe_cancelled(self, node: _Node | None, outcome: State, now: float) -> list[Action]:
        """While cancelling, a node's last word (finished or failed) ends it as cancelled."""
        if node is None or node.state != State.CANCELLING:
            return []
        return self.node_cancelled(node.spec.node_id, node.attempt, now)

    def _dispatch(self, node: _Node, out: list[Action], *, started: bool = False) -> None:
        """The node's next attempt, unless the task is suspended and the node is not one
        that had ``started`` (then it waits in :attr:`held`)."""
        if self.suspended and not started:
            if node.spec.node_id not in self.held:
                self.held.append(node.spec.node_id)
            return
        node.attempt += 1
        node.state = State.QUEUED
        out.append(
            NodeChanged(
                node.spec.node_id, {"status": State.QUEUED, "attempts": node.attempt, "retry_at": None}
            )
        )
        out.append(Dispatch(node.spec.node_id, node.attempt))

    def _satisfy(self, child: _Node, dep_id: str, out: list[Action]) -> None:
        if dep_id in child.started_by or child.state.terminal:
            return
        child.started_by.add(dep_id)
        if child.attempt == child.base and len(child.started_by) == child.required:
            self._dispatch(child, out)

    def _fail(self, node: _Node, error: NodeError, now: float, out: list[Action]) -> None:
        """Fail a node, then every dependent whose fan-in can no longer be met."""
        pending = [(node, error, self._active(node))]
        while pending:
            current, why, active = pending.pop()
            if active:
                out.append(StopRunning(current.spec.node_id, current.attempt, why.code))
            out.append(
                NodeChanged(current.spec.node_id, {"status": State.FAILED, "error": why, "finished_at": now})
            )
            self._close(current, State.FAILED, out)
            self.any_failed = True
            for child_id in current.dependents:
                child = self.nodes[child_id]
                if child.state.terminal:
                    continue
                child.dead_deps += 1
                if len(child.spec.depends_on) - child.dead_deps < child.required:
                    reason = NodeError(
                        code="upstream_failed",
                        permanent=True,
                        message=f"dependency '{current.spec.node_id}' {current.state.value}; "
                        f"fan_in '{child.spec.fan_in}' can no longer be met",
                    )
                    pending.append((child, reason, self._active(child)))
                    child.state = State.FAILED  # claimed, so a second parent skips it

    @staticmethod
    def _active(node: _Node) -> bool:
        """Dispatched to a worker and not yet ended."""
        return node.attempt > node.base and node.state in (State.QUEUED, State.RUNNING, State.CANCELLING)

    def _close(self, node: _Node, state: State, out: list[Action]) -> None:
        if node.closed:
            return
        node.closed = True
        node.state = state
        self.open -= 1

    def _settle(self, out: list[Action]) -> list[Action]:
        if self.open == 0 and not self.state.terminal:
            if self.state == State.CANCELLING:
                self.state = State.CANCELLED
            elif self.any_failed:
                self.state = State.FAILED
            else:
                self.state = State.FINISHED
            out.append(TaskEnded(self.state))
        return out
