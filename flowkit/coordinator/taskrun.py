"""What a coordinator keeps in memory about one task it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..graph import GraphSpec
from ..protocol import Envelope, Kind
from ..states import TaskStatus, apply_fields
from ..store.base import Fence
from .scheduler import Scheduler


@dataclass(eq=False)  # held in sets by identity
class TaskRun:
    """The live view of a held task, and the writes and messages not yet flushed.

    Changes are applied to ``status`` at once and queued in ``task_fields`` /
    ``node_fields`` / ``outbox``; the outbox flusher writes them in one fenced
    single-document update, then sends the messages: state first, so a crash in between
    leaves a stored state from which the next owner sends the messages again.
    """

    graph: GraphSpec
    scheduler: Scheduler
    status: TaskStatus
    fence: Fence
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    dropped: bool = False
    """This coordinator no longer holds the task (lease lost, deleted, stopped): change nothing."""
    held_since: float = field(default_factory=time.monotonic)
    """When this coordinator had the task's claim in hand (it is made after the claim)."""
    seen_batches: dict[str, set[str]] = field(default_factory=dict)
    worker_lease: dict[str, float] = field(default_factory=dict)
    """node -> when its worker's lease runs out (from ACCEPTED and heartbeats of the current attempt)."""
    sent_at: dict[str, float] = field(default_factory=dict)
    """node -> when its RUN was (re)sent and not yet accepted."""
    hops: dict[str, int] = field(default_factory=dict)
    """node -> how often its current attempt's RUN was sent again to another partition."""
    functions: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    buffered: list[Envelope] | None = None
    """Status messages that came while the task was being adopted (None: not adopting)."""
    task_fields: dict[str, Any] = field(default_factory=dict)
    node_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[tuple[str, Envelope]] = field(default_factory=list)
    flush_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    urgent_nodes: set[str] = field(default_factory=set)
    """Nodes with a change not taken for a write yet that must be written at once."""
    waiting_since: float | None = None
    """When the oldest change that may wait (``may_wait``) and is not written yet was made
    (monotonic): it waits at most ``LATE_WRITE_SEC`` from then, or rides with an urgent
    change of its own node."""
    after_flush: list[Callable[[], None]] = field(default_factory=list)
    """Effects that must follow the state written by the next flush (starting a coordinator
    function), like messages do."""

    @property
    def task_id(self) -> str:
        return self.status.task_id

    def set_task(self, fields: dict[str, Any]) -> None:
        apply_fields(self.status, fields)
        self.task_fields.update(fields)

    def set_node(self, node_id: str, fields: dict[str, Any], *, may_wait: bool = False) -> None:
        """``may_wait``: the store may learn this a little later (see ``Outbox``)."""
        apply_fields(self.status.nodes[node_id], fields)
        self.node_fields.setdefault(node_id, {}).update(fields)
        if not may_wait:
            self.urgent_nodes.add(node_id)
        elif self.waiting_since is None:
            self.waiting_since = time.monotonic()

    @property
    def urgent(self) -> bool:
        return bool(self.urgent_nodes)

    def send(self, topic: str, message: Envelope) -> None:
        self.outbox.append((topic, message))

    @property
    def unflushed(self) -> bool:
        return bool(self.task_fields or self.node_fields or self.outbox or self.after_flush)

    def take_unflushed(
        self, *, everything: bool = True
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[tuple[str, Envelope]]]:
        """What is queued for the next write; without ``everything``, of the nodes only
        those with an urgent change (the others' changes keep waiting, and their clock)."""
        if everything:
            nodes, self.node_fields, self.waiting_since = self.node_fields, {}, None
        else:
            nodes = {n: self.node_fields.pop(n) for n in self.urgent_nodes if n in self.node_fields}
            if not self.node_fields:
                self.waiting_since = None
        taken = (self.task_fields, nodes, self.outbox)
        self.task_fields, self.outbox = {}, []
        self.urgent_nodes = set()
        return taken

    def take_commands(self) -> list[tuple[str, Envelope]]:
        """The queued run commands, taken out of the outbox (they do not wait for a write)."""
        commands = [item for item in self.outbox if item[1].kind == Kind.RUN]
        if commands:
            self.outbox = [item for item in self.outbox if item[1].kind != Kind.RUN]
        return commands

    def put_back(
        self,
        task_fields: dict[str, Any],
        node_fields: dict[str, dict[str, Any]],
        outbox: list[tuple[str, Envelope]],
    ) -> None:
        """A flush failed: its changes go first, under what changed since."""
        self.urgent_nodes.update(node_fields)
        self.task_fields = {**task_fields, **self.task_fields}
        for node_id, fields in node_fields.items():
            self.node_fields[node_id] = {**fields, **self.node_fields.get(node_id, {})}
        self.outbox = outbox + self.outbox
