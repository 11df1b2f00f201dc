"""The coordinator: holds tasks, feeds their events to the scheduler, carries out its decisions.

The parts, each in its own module around the pure :mod:`.scheduler`:
:mod:`.intake` applies what workers report, :mod:`.executor` carries out decisions,
:mod:`.outbox` writes them behind and sends their messages, :mod:`.leases` claims,
renews and adopts tasks and watches the workers' leases on attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..backends import resolve_backends
from ..bus.base import Subscription
from ..config import CoordinatorConfig
from ..errors import FlowKitError, TaskNotFound
from ..graph import GraphSpec, graph_document, validate_graph
from ..protocol import ANNOUNCE_TOPIC, STATUS_TOPIC, Kind
from ..states import NodeStatus, State, TaskStatus
from ..store.base import Fence, Store
from .executor import Executor
from .intake import StatusIntake
from .leases import Leases
from .outbox import Outbox
from .scheduler import Scheduler
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")

STOP_FLUSH_SEC = 5.0
_WAIT_POLL_SEC = 1.0


class Coordinator:
    """Schedules task graphs over workers (seed docs: ``Coordinator(db=..., cfg=...)``).

    ``db`` is a MongoDB database (pymongo's ``AsyncMongoClient()[name]`` or motor's) for
    the distributed runtime over Kafka at ``cfg.kafka_bootstrap``; without it, the
    embedded in-process backend. Several coordinators share the tasks of one database.

    >>> task_id = await coordinator.create_task(params={}, graph=graph)
    >>> status = await coordinator.wait_task(task_id)
    """

    def __init__(
        self,
        db: Any = None,
        cfg: CoordinatorConfig | None = None,
        *,
        store: Any = None,
        bus: Any = None,
    ) -> None:
        self.cfg = cfg or CoordinatorConfig()
        self.backends = resolve_backends(db, store, bus, self.cfg, client_id=self.cfg.coordinator_id)
        self.store, self.bus = self.backends.store, self.backends.bus
        self._tasks: dict[str, TaskRun] = {}
        self._workers: dict[str, tuple[set[str], float]] = {}  # worker id -> (roles, last seen)
        self.outbox = Outbox(self.store, self.bus, self._drop, self._task_done)
        self.executor = Executor(self.cfg, self.store, self.outbox, self._live_roles)
        self.intake = StatusIntake(self.cfg, self.store, self.executor)
        self.leases = Leases(self.cfg, self.store, self._tasks, self.executor, self.intake, self._drop)
        self._subscriptions: list[Subscription] = []
        self._loops: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._started = False

    @property
    def coordinator_id(self) -> str:
        return self.cfg.coordinator_id

    def broken_loop(self) -> str | None:
        """For liveness probes: the name of a background loop that ended (it should run
        until :meth:`stop`), or None when all run; "not started" before :meth:`start`."""
        if not self._started:
            return "not started"
        for loop in [*self._loops, *([self._flusher] if self._flusher else [])]:
            if loop.done():
                return loop.get_name()
        return None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("coordinator is already started")
        self._started = True
        await self.backends.acquire()
        try:
            status = await self.bus.subscribe([STATUS_TOPIC], group=None)
            self._subscriptions.append(status)
            announcements = await self.bus.subscribe([ANNOUNCE_TOPIC], group=None)
            self._subscriptions.append(announcements)
            for state in await self.store.list_worker_states():
                if state.get("status") == "online":
                    self._saw_worker(
                        str(state["worker_id"]), state.get("roles") or [], state.get("updated_at")
                    )
        except BaseException:
            await self._close_subscriptions()
            await self.backends.release()
            self._started = False
            raise
        self._flusher = asyncio.create_task(self.outbox.run_forever(), name="coordinator-outbox")
        self._loops = [
            asyncio.create_task(self._take_status(status), name="coordinator-status"),
            asyncio.create_task(self._take_announcements(announcements), name="coordinator-workers"),
            asyncio.create_task(self.leases.adopt_forever(), name="coordinator-adopt"),
            asyncio.create_task(self.leases.renew_forever(), name="coordinator-renew"),
            asyncio.create_task(self.leases.check_attempts_forever(), name="coordinator-attempts"),
        ]
        if self.backends.feed is not None:
            self.backends.feed.on("new", lambda _task_id: self.leases.wake_adoption.set())
            self.backends.feed.on("cancel", self._requested)
            self.backends.feed.on("suspend", self._requested)
        log.info("coordinator %s started", self.cfg.coordinator_id)

    async def stop(self) -> None:
        """Stop deciding, write what was decided, give the tasks up so another coordinator
        adopts them at once, and close."""
        if not self._started:
            return
        self._started = False
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        await self.executor.stop()
        with contextlib.suppress(Exception):
            await self.outbox.drain(STOP_FLUSH_SEC)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for run in list(self._tasks.values()):
            with contextlib.suppress(Exception):
                await self.store.release_task(run.fence, run.task_id)
            self._drop(run, "coordinator stopped")
        await self._close_subscriptions()
        await self.backends.release()
        log.info("coordinator %s stopped", self.cfg.coordinator_id)

    async def _close_subscriptions(self) -> None:
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.close()
        self._subscriptions.clear()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- public API ----------------------------------------------------------------

    async def create_task(
        self,
        params: dict[str, Any] | None = None,
        graph: Mapping[str, Any] | GraphSpec | None = None,
        *,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        suspended: bool = False,
    ) -> str:
        """Validate ``graph`` (raises GraphError naming node and field), store it, start it.

        With ``task_id`` it is idempotent: if that task exists, its id is returned and
        nothing about it changes. ``labels`` are kept with the task (``TaskStatus.labels``);
        ``suspended`` creates it held (no node starts until :meth:`resume_task`).
        """
        if not self._started:
            raise RuntimeError("call `await coordinator.start()` before create_task()")
        if graph is None:
            raise FlowKitError("create_task() needs graph=")
        spec = validate_graph(graph, roles=self.cfg.worker_types, max_nodes=self.cfg.max_nodes)
        task_id = task_id or uuid.uuid4().hex
        me = self.cfg.coordinator_id
        status = new_task_status(task_id, spec, params, owner=me)
        status.labels = dict(labels or {})
        status.suspended = suspended
        created = await self.store.create_task(
            status, graph_document(spec), owner=me, lease_sec=self.cfg.task_lease_sec
        )
        if not created and not await self._is_own_unstarted(task_id):
            log.info("task %s exists already: not created again", task_id)
            return task_id
        scheduler = Scheduler(spec)
        scheduler.suspended = suspended
        run = TaskRun(spec, scheduler, status, Fence(me, 1))
        self._tasks[task_id] = run
        log.info("task %s created: %d nodes", task_id, len(spec.nodes))
        run.set_task({"status": State.RUNNING})
        self.executor.apply(run, run.scheduler.start())
        await self.outbox.flush(run)
        return task_id

    async def _is_own_unstarted(self, task_id: str) -> bool:
        """Our own insert, seen as a duplicate because a retry after a lost connection
        found it: still ours to start (fence 1, queued)."""
        existing = await self.store.get_task(task_id)
        return (
            task_id not in self._tasks
            and existing is not None
            and existing.owner == self.cfg.coordinator_id
            and existing.status == State.QUEUED
        )

    async def get_status(self, task_id: str) -> TaskStatus:
        """The task's status: for a task this coordinator holds, what it knows now (its
        writes to the store follow within one flush); otherwise what the store says."""
        run = self._tasks.get(task_id)
        if run is not None and not run.dropped:
            return run.status.snapshot()
        status = await self.store.get_task(task_id)
        if status is None:
            raise TaskNotFound(task_id)
        return status

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Wait until the task is finished, failed or cancelled (whoever holds it); return its status."""
        async with asyncio.timeout(timeout):
            while True:
                run = self._tasks.get(task_id)
                if run is not None and not run.dropped:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(run.done.wait(), _WAIT_POLL_SEC)
                    if not run.done.is_set():
                        continue
                version = self.store.version(task_id)
                status = await self.get_status(task_id)
                if status.status.terminal:
                    return status
                if task_id not in self._tasks:
                    await self.store.wait_changed(task_id, version, _WAIT_POLL_SEC)

    async def watch(self, task_id: str, interval: float = 0.2) -> AsyncIterator[TaskStatus]:
        """Yield the task's status whenever it changed (at most every ``interval`` s) until it ends."""
        version = -1
        while True:
            current = self.store.version(task_id)
            if current != version:
                version = current
                status = await self.get_status(task_id)
                yield status
                if status.status.terminal:
                    return
            await self.store.wait_changed(task_id, version, timeout=1.0)
            await asyncio.sleep(interval)  # rate limit for displays, not synchronisation

    async def cancel_task(self, task_id: str, reason: str = "cancelled by user") -> None:
        """Stop running handlers cooperatively (``ctx.cancel_flag``) and cancel the rest.
        A task held by another coordinator is cancelled by that one."""
        run = self._tasks.get(task_id)
        if run is None or run.dropped:
            await self.get_status(task_id)  # raises TaskNotFound
            await self.store.request_cancel(task_id, reason)
            if self.backends.feed is not None:
                self.backends.feed.announce(task_id, "cancel")
            return
        log.info("task %s: cancelling (%s)", task_id, reason)
        actions = run.scheduler.cancel(reason, time.time())
        if run.scheduler.state == State.CANCELLING:
            run.set_task({"status": State.CANCELLING})
        self.executor.apply(run, actions)
        await self.outbox.flush(run)

    async def suspend_task(self, task_id: str) -> None:
        """Start no new node until :meth:`resume_task`; running nodes finish (one that
        loses its worker runs again: it had started). Any process, any owner."""
        await self._set_suspended(task_id, True)

    async def resume_task(self, task_id: str) -> None:
        """Start the nodes held back by :meth:`suspend_task`."""
        await self._set_suspended(task_id, False)

    async def _set_suspended(self, task_id: str, suspended: bool) -> None:
        # Always stored: a coordinator adopting the task later must know what was asked.
        await self.store.request_suspend(task_id, suspended)
        run = self._tasks.get(task_id)
        if run is None or run.dropped:
            if self.backends.feed is not None:
                self.backends.feed.announce(task_id, "suspend")
            return
        self._apply_suspend(run, suspended)
        await self.outbox.flush(run)

    def _apply_suspend(self, run: TaskRun, suspended: bool) -> None:
        scheduler = run.scheduler
        self.executor.apply(run, scheduler.suspend() if suspended else scheduler.resume())

    async def retry_task(self, task_id: str) -> list[str]:
        """Run a failed or cancelled task again from its unfinished nodes: finished nodes
        keep their results, the others start over with a fresh ``retry_policy`` budget
        (their attempt numbers go on). Returns the ids of the nodes that will run again;
        FlowKitError if the task is not failed or cancelled. Any coordinator adopts it."""
        again = await reopen_task(self.store, await self.get_status(task_id))
        log.info("task %s: retrying %d node(s): %s", task_id, len(again), ", ".join(again))
        self.leases.wake_adoption.set()
        if self.backends.feed is not None:
            self.backends.feed.announce(task_id, "new")
        return again

    async def delete_task(self, task_id: str, cancel_timeout: float = 30.0) -> bool:
        """Remove the task with its artifacts, batch records, checkpoints and runs; True
        if it existed. A task still running is cancelled first, and its handlers get up
        to ``cancel_timeout`` seconds to stop (so none writes after the delete)."""
        try:
            status = await self.get_status(task_id)
        except TaskNotFound:
            return await self.store.delete_task(task_id)
        if not status.status.terminal:
            await self.cancel_task(task_id, "deleted")
            with contextlib.suppress(TimeoutError):
                await self.wait_task(task_id, timeout=cancel_timeout)
        run = self._tasks.get(task_id)
        if run is not None:
            self._drop(run, "deleted")
        return await self.store.delete_task(task_id)

    def on_change(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(task_id)`` after every change of any task, by this process or
        (through the change feed) any other; returns the function that stops it. The
        callback must not block: read the status elsewhere (it is a hint, not the data)."""
        return self.store.observe(callback)

    # -- what comes in ---------------------------------------------------------------

    async def _take_status(self, sub: Subscription) -> None:
        async for delivery in sub:
            message = delivery.message
            run = self._tasks.get(message.task_id)
            if run is None or run.dropped:
                continue  # another coordinator's task
            if run.buffered is not None:
                run.buffered.append(message)  # being adopted: applied once rebuilt
                continue
            try:
                self.intake.on_status(run, message)
            except Exception:
                log.exception(
                    "task %s: status %s could not be applied; reconciling from the store",
                    message.task_id,
                    message.kind,
                )
                run.worker_lease[message.node_id] = 0.0  # the next attempt check reads the run record

    async def _take_announcements(self, sub: Subscription) -> None:
        async for delivery in sub:
            message = delivery.message
            if message.kind != Kind.ANNOUNCE:
                continue
            if message.payload.get("status") == "offline":
                self._workers.pop(message.worker_id, None)
            else:
                self._saw_worker(message.worker_id, message.payload.get("capabilities", {}).get("roles", []))

    def _saw_worker(self, worker_id: str, roles: list[str], when: float | None = None) -> None:
        self._workers[worker_id] = (set(roles), when or time.time())

    def _live_roles(self) -> set[str]:
        horizon = time.time() - 3 * max(self.cfg.worker_lease_ttl_sec, 60.0)
        return {role for roles, seen in self._workers.values() if seen >= horizon for role in roles}

    def _requested(self, task_id: str) -> None:
        if task_id in self._tasks:
            self.executor.spawn(asyncio.create_task(self._carry_out_requests(task_id)))

    async def _carry_out_requests(self, task_id: str) -> None:
        """Another process asked (cancel, suspend, resume): read what, do it."""
        status = await self.store.get_task(task_id)
        run = self._tasks.get(task_id)
        if status is None or run is None or run.dropped or run.scheduler.state.terminal:
            return
        if status.suspend_requested is not None and status.suspend_requested != run.scheduler.suspended:
            self._apply_suspend(run, status.suspend_requested)
            await self.outbox.flush(run)
        if status.cancel_requested:
            await self.cancel_task(task_id, status.cancel_requested)

    # -- tasks leaving -----------------------------------------------------------------

    def _task_done(self, run: TaskRun) -> None:
        """Ended and written: it leaves this coordinator's memory."""
        if self._tasks.get(run.task_id) is run:
            del self._tasks[run.task_id]

    def _drop(self, run: TaskRun, why: str) -> None:
        if self._tasks.get(run.task_id) is run:
            del self._tasks[run.task_id]
        if not run.dropped:
            log.info("coordinator %s let task %s go: %s", self.cfg.coordinator_id, run.task_id, why)
        self.executor.forget(run)


async def reopen_task(store: Store, status: TaskStatus) -> list[str]:
    """Make a failed or cancelled task runnable again from its unfinished nodes (one
    conditional store update; see ``Coordinator.retry_task``); the ids of those nodes."""
    task_id = status.task_id
    if status.status not in (State.FAILED, State.CANCELLED):
        raise FlowKitError(
            f"task {task_id} is {status.status.value}: only a failed or cancelled task can be retried"
        )
    again = {nid: node for nid, node in status.nodes.items() if node.status != State.FINISHED}
    node_fields: dict[str, dict[str, Any]] = {
        nid: {
            "status": State.QUEUED,
            "error": None,
            "finished_at": None,
            "retry_at": None,
            "note": None,
            "worker_id": None,
            "first_batch_at": None,
            "worker_losses": 0,
            "attempt_base": node.attempts,
        }
        for nid, node in again.items()
    }
    task_fields = {"status": State.RUNNING, "error": None, "finished_at": None}
    if not await store.reopen_task(task_id, task_fields, node_fields):
        raise FlowKitError(f"task {task_id} changed while being retried: it is not failed or cancelled")
    return sorted(again)


def new_task_status(
    task_id: str, spec: GraphSpec, params: dict[str, Any] | None, owner: str | None
) -> TaskStatus:
    """The status of a task that has not started: every node queued."""
    return TaskStatus(
        task_id=task_id,
        params=dict(params or {}),
        created_at=time.time(),
        owner=owner,
        nodes={n.node_id: NodeStatus(node_id=n.node_id, type=n.type) for n in spec.nodes},
    )
