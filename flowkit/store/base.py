"""The store interface: tasks with per-node state, artifacts, batch records, checkpoints.

Every write is a single-record operation that is safe to repeat (idempotent upserts
keyed by task, node and batch uid), so the same calls map onto single-document
conditional updates in MongoDB.

Every record has ONE writer at a time in normal operation, because FerretDB (the
MongoDB-protocol server of the tests) applies an update as a read-modify-write of the
whole document, so two concurrent writers of one document lose each other's changes:

- a task record is written by its owner coordinator (fenced writes, serialized per
  task), by a claim or a release, and at its creation: never by a lease renewal or by
  another process's cancel request;
- a coordinator's liveness (``until``) is written by that coordinator alone: its
  renewals, its claims and its creations. A task's lease is held while its owner is
  live, so renewing every lease of a coordinator is one write;
- a cancel request is a record of its own per task, written by whoever asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ..states import NodeError, State, TaskStatus


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


@dataclass(frozen=True, slots=True)
class AttemptInputs:
    state: State | None
    checkpoint: dict[str, Any] | None
    counted: set[str]


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof that ``owner`` holds a task: ``token`` grows by one at every claim, so a write
    carrying an older token (a coordinator that lost the task) is refused with LeaseLost."""

    owner: str
    token: int


RunState = Literal["running", "finished", "failed", "cancelled", "released"]


@dataclass(frozen=True, slots=True)
class RunClaim:
    """A worker taking one attempt (:meth:`Store.claim_runs`)."""

    task_id: str
    node_id: str
    attempt: int
    worker_id: str
    lease_sec: float
    now: float


@dataclass(frozen=True, slots=True)
class CountedBatch:
    """One batch to count once (:meth:`Store.record_batches`)."""

    task_id: str
    node_id: str
    batch_uid: str
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A worker recording the outcome of an attempt it holds (:meth:`Store.end_runs`)."""

    task_id: str
    node_id: str
    attempt: int
    worker_id: str
    state: RunState
    now: float
    metrics: dict[str, float] | None = None
    error: NodeError | None = None
    batches: tuple[CountedBatch, ...] = ()
    """Batch records that go with the outcome, in the same write: counted (first record
    wins, as :meth:`Store.record_batches`) if and only if the outcome is recorded. A
    short run's batches cost no write of their own."""

    def __post_init__(self) -> None:
        if self.state == "running":
            raise ValueError("end_run needs a final state, not 'running'")
        if any((b.task_id, b.node_id) != (self.task_id, self.node_id) for b in self.batches):
            raise ValueError("a run's end carries batch records of its own node only")


class RunRecord(BaseModel):
    """One attempt of one node as its worker reports it: the worker's lease on the attempt.

    Written by the worker *before* it tells the coordinator over the bus, so a coordinator
    that missed the message (it crashed, another adopted the task) finds the outcome here.
    """

    task_id: str
    node_id: str
    attempt: int
    worker_id: str
    state: RunState = "running"
    lease_until: float = 0.0
    accepted_at: float = 0.0
    ended_at: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    error: NodeError | None = None


BARRED = ""
"""The worker id of an attempt barred before any worker claimed it (:meth:`Store.bar_run`)."""


def barred_run(task_id: str, node_id: str, attempt: int, now: float) -> RunRecord:
    return RunRecord(
        task_id=task_id, node_id=node_id, attempt=attempt, worker_id=BARRED, state="cancelled", ended_at=now
    )


ChangeListener = Callable[[str], None]
"""Called with a task id after each write this store made to that task."""


class Store(Protocol):
    # -- tasks --
    async def create_task(
        self, status: TaskStatus, graph: dict[str, Any], *, owner: str | None = None, lease_sec: float = 0.0
    ) -> bool:
        """Insert the task; False (and nothing changed) if the id exists. With ``owner`` the
        new task is held by it: fence token 1, and ``owner`` is live until at least now +
        ``lease_sec`` (a brand new coordinator's first task is held at once)."""
        ...

    async def get_task(self, task_id: str) -> TaskStatus | None:
        """The task with ``cancel_requested`` filled from its cancel request, if any."""
        ...

    async def get_graph(self, task_id: str) -> dict[str, Any] | None: ...
    async def update_task(
        self, task_id: str, fields: dict[str, Any], *, fence: Fence | None = None
    ) -> None: ...
    async def update_node(
        self, task_id: str, node_id: str, fields: dict[str, Any], *, fence: Fence | None = None
    ) -> None: ...
    async def write_task(
        self,
        task_id: str,
        task_fields: dict[str, Any],
        node_fields: dict[str, dict[str, Any]],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Task fields and any number of nodes' fields in ONE single-document update.
        With ``fence``: refused (LeaseLost, nothing written) unless the task's owner and
        token are still the fence's. No expiry check: liveness is the owner's business,
        the fence alone keeps a stale owner out."""
        ...

    async def delete_task(self, task_id: str) -> bool:
        """Remove the task with its artifacts, batch records, checkpoints, runs and cancel
        request."""
        ...

    async def request_cancel(self, task_id: str, reason: str) -> None:
        """Ask the owner to cancel: any process, no fence. Written as a record of its own,
        never into the task's record (whose one writer is its owner); TaskNotFound for an
        unknown task. The change listener hears it as a write to the task."""
        ...

    async def request_suspend(self, task_id: str, suspended: bool) -> None:
        """Ask the owner to hold back new nodes (True) or go on (False): any process, no
        fence, stored with the cancel request; ``get_task`` reads it as ``suspend_requested``."""
        ...

    async def reopen_task(
        self, task_id: str, task_fields: dict[str, Any], node_fields: dict[str, dict[str, Any]]
    ) -> bool:
        """Set the fields of a failed or cancelled task (``retry_task``) in one update,
        conditional on it still being so, leave it unowned (any coordinator adopts it) and
        drop its cancel request. False, nothing written, otherwise."""
        ...

    async def cancel_request(self, task_id: str) -> str | None:
        """The reason of the task's cancel request; None if there is none (or no task)."""
        ...

    # -- ownership: fencing tokens in the task, liveness per coordinator --
    async def claim_task(self, task_id: str, owner: str, lease_sec: float, now: float) -> Fence | None:
        """Take a task that is not terminal and unowned, or whose owner is not live at
        ``now``, or whose owner is ``owner`` (taking one's own task again moves the fence
        on, fencing off any write still in flight under the earlier claim). Of racing
        claimers exactly one wins. Keeps ``owner`` live until at least now + ``lease_sec``."""
        ...

    async def renew_leases(self, owner: str, lease_sec: float, now: float) -> set[str]:
        """Keep ``owner`` live until now + ``lease_sec`` (one write to the coordinator's own
        record, none to any task); return the ids of the non-terminal tasks it holds."""
        ...

    async def release_task(self, fence: Fence, task_id: str) -> None:
        """Give the task up (clean stop): another coordinator may claim it at once.
        Nothing happens unless ``fence`` still holds it."""
        ...

    async def claimable_tasks(self, now: float, limit: int = 100, *, owner: str | None = None) -> list[str]:
        """Ids of non-terminal tasks, oldest first, that are unowned or whose owner is not
        live at ``now`` (``until < now``, or never seen), and with ``owner`` also the tasks
        ``owner`` holds itself: a coordinator finds its own orphans (a claim whose reply was
        lost, a restart under the same id)."""
        ...

    async def node_state(self, task_id: str, node_id: str) -> State | None: ...
    async def node_states(self, keys: Sequence[tuple[str, str]]) -> list[State | None]:
        """:meth:`node_state` of each (task id, node id), in one round trip."""
        ...

    async def list_tasks(self, states: set[State] | None = None, limit: int = 100) -> list[TaskStatus]:
        """The ``limit`` most recently created tasks (in any of ``states``), oldest first,
        with ``cancel_requested`` left None (read one task's with :meth:`get_task`)."""
        ...

    # -- artifacts --
    async def put_artifact(
        self, task_id: str, node_id: str, batch_uid: str, meta: dict[str, Any]
    ) -> Artifact: ...
    async def put_artifacts(
        self, task_id: str, node_id: str, items: Sequence[tuple[str, dict[str, Any]]], *, new: bool
    ) -> None:
        """:meth:`put_artifact` of each ``(batch_uid, meta)``, in this order; with ``new``
        (no uid of them is stored yet: the caller knows) in one round trip."""
        ...

    async def complete_artifacts(self, task_id: str, node_id: str) -> None: ...
    async def list_artifacts(self, task_id: str, node_id: str, after: int = 0) -> list[Artifact]: ...
    async def next_artifacts(self, task_id: str, node_id: str, after: int, limit: int) -> list[Artifact]:
        """Up to ``limit`` artifacts of a stream being written, from ``seq`` ``after + 1`` on
        with none missing between (cheaper than :meth:`list_artifacts` on MongoDB: by key)."""
        ...

    # -- batches (exactly-once accounting) and checkpoints --
    async def record_batch(
        self, task_id: str, node_id: str, batch_uid: str, metrics: dict[str, float]
    ) -> bool: ...
    async def record_batches(self, batches: Sequence[CountedBatch]) -> list[bool]:
        """:meth:`record_batch` of each, in one round trip: True for each first record."""
        ...

    async def batch_records(self, task_id: str, node_id: str) -> dict[str, dict[str, float]]: ...
    async def save_checkpoint(self, task_id: str, node_id: str, data: dict[str, Any]) -> None: ...
    async def load_checkpoint(self, task_id: str, node_id: str) -> dict[str, Any] | None: ...
    async def attempt_inputs(self, task_id: str, node_id: str) -> AttemptInputs:
        """What a worker reads before it starts an attempt, at once: the node's state,
        its checkpoint and the batch uids earlier attempts counted."""
        ...

    # -- runs: the worker's lease on one attempt, and its outcome --
    async def claim_run(
        self, task_id: str, node_id: str, attempt: int, worker_id: str, lease_sec: float, now: float
    ) -> bool:
        """Take an attempt: True if this worker holds it now (first claim, or its own again)."""
        ...

    async def claim_runs(self, claims: Sequence[RunClaim]) -> list[bool]:
        """:meth:`claim_run` of each, in one round trip (a worker's group commit)."""
        ...

    async def renew_runs(
        self, worker_id: str, runs: Iterable[tuple[str, str, int]], lease_sec: float, now: float
    ) -> int:
        """Extend the leases ``worker_id`` holds on ``runs`` ((task id, node id, attempt)
        each); return how many it still held. Named, not all of the worker's: an attempt
        an earlier process of the same worker id left running is not kept alive."""
        ...

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
        """Record the outcome if ``worker_id`` still holds the running attempt. True also
        when the attempt ended just so already (the same state at the same ``now``: this
        call again, after a lost answer); False when another outcome was recorded."""
        ...

    async def end_runs(self, ends: Sequence[RunEnd]) -> list[bool]:
        """:meth:`end_run` of each, in one round trip: True for each outcome recorded
        (False: not held by that worker, or its task is gone), and with it the batch
        records it carries (:attr:`RunEnd.batches`), which :meth:`batch_records` lists."""
        ...

    async def bar_run(self, task_id: str, node_id: str, attempt: int, now: float) -> bool:
        """Make sure an attempt never starts (its node was stopped while queued): True if no
        worker had claimed it, and none can now (it is recorded ``cancelled`` by nobody,
        ``worker_id=""``); False if a worker holds it or ended it (then stop it by signal)."""
        ...

    async def get_runs(self, task_id: str) -> list[RunRecord]: ...

    async def get_run(self, task_id: str, node_id: str, attempt: int) -> RunRecord | None:
        """One attempt's record (None if no worker claimed it): a read by key, where
        ``get_runs`` reads every attempt of the task."""
        ...

    # -- worker states (the seed's ``worker_states`` collection) --
    async def set_worker_state(self, worker_id: str, fields: dict[str, Any]) -> None:
        """Upsert the worker's document, setting ``fields`` (dotted paths allowed)."""
        ...

    async def get_worker_state(self, worker_id: str) -> dict[str, Any] | None: ...
    async def list_worker_states(self) -> list[dict[str, Any]]: ...

    # -- change notification (readers of streaming artifacts wait on this) --
    def version(self, task_id: str) -> int: ...
    async def wait_changed(self, task_id: str, since: int, timeout: float) -> int: ...
    def notice(self, task_id: str) -> None:
        """Another process changed the task: bump its version and wake waiters."""
        ...

    def set_change_listener(self, listener: ChangeListener | None) -> None:
        """``listener(task_id)`` after each write this store makes (the change feed)."""
        ...

    def observe(self, observer: Callable[[str], None]) -> Callable[[], None]:
        """``observer(task_id)`` after every change of any task, written here or noticed
        (the change feed); returns the function that stops it."""
        ...
