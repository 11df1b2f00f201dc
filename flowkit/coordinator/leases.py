"""Leases: which coordinator holds which task, and which worker holds which attempt.

Tasks. Each task document names its owner, a lease deadline and a fencing token. A
coordinator claims tasks nobody holds (new ones from ``flowkit submit``, or those of a
coordinator whose lease ran out) with one conditional update each, renews all of its
leases with one update every third of ``task_lease_sec``, and writes only with its
fence: once another coordinator has claimed a task, the old owner's writes are refused
and it lets the task go. Adopting rebuilds the scheduler from the stored nodes and the
attempts' run records, then carries on (commands sent again, retries rescheduled).

Attempts. A RUN counts from the moment it is sent: not accepted within
``accept_timeout_sec``, it is sent again. Once accepted, the worker's lease runs while
its heartbeats for *that* attempt arrive; when it runs out, the run record decides: an
outcome the coordinator missed is applied, a lease still renewed in the store is
believed, and a lapsed one means the worker is gone and the node runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from ..config import CoordinatorConfig
from ..graph import validate_graph
from ..store.base import Fence, RunRecord, Store
from .executor import Executor
from .intake import StatusIntake
from .scheduler import Scheduler
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")


class Leases:
    def __init__(
        self,
        cfg: CoordinatorConfig,
        store: Store,
        tasks: dict[str, TaskRun],
        executor: Executor,
        intake: StatusIntake,
        on_drop: Callable[[TaskRun, str], None],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.tasks = tasks
        self.executor = executor
        self.intake = intake
        self._on_drop = on_drop
        self.wake_adoption = asyncio.Event()

    # -- tasks ---------------------------------------------------------------------

    async def adopt_forever(self) -> None:
        while True:
            try:
                await self.adopt_orphans()
            except Exception as exc:
                log.warning(
                    "coordinator %s: looking for tasks to adopt failed: %s", self.cfg.coordinator_id, exc
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake_adoption.wait(), self.cfg.adopt_interval_sec)
            self.wake_adoption.clear()

    async def adopt_orphans(self) -> None:
        now = time.time()
        for task_id in await self.store.claimable_tasks(now, owner=self.cfg.coordinator_id):
            if task_id in self.tasks:
                continue
            fence = await self.store.claim_task(
                task_id, self.cfg.coordinator_id, self.cfg.task_lease_sec, now
            )
            if fence is not None:
                await self.adopt(task_id, fence)

    async def adopt(self, task_id: str, fence: Fence) -> None:
        """Rebuild a claimed task from the store and carry it on."""
        status, graph = await self.store.get_task(task_id), await self.store.get_graph(task_id)
        if status is None or graph is None:
            return
        spec = validate_graph(graph, max_nodes=max(self.cfg.max_nodes, len(graph.get("nodes", []))))
        run = TaskRun(spec, Scheduler(spec), status, fence, buffered=[])
        self.tasks[task_id] = run
        try:
            in_flight = [
                (n, saved.attempts)
                for n, saved in status.nodes.items()
                if not saved.status.terminal and saved.attempts > 0
            ]
            records = await self._run_records(task_id, in_flight)
            for node_id, _ in in_flight:
                run.seen_batches[node_id] = set(await self.store.batch_records(task_id, node_id))
        except BaseException:
            self.tasks.pop(task_id, None)
            raise
        now = time.time()
        suspended = status.suspended if status.suspend_requested is None else status.suspend_requested
        actions = run.scheduler.restore(status.status, status.nodes, now, suspended=suspended)
        log.info(
            "coordinator %s adopted task %s (fence %d, was %s)",
            self.cfg.coordinator_id,
            task_id,
            fence.token,
            status.owner or "new",
        )
        run.set_task({"owner": self.cfg.coordinator_id, "suspended": suspended})
        if run.status.status.value == "queued":
            run.set_task({"status": run.scheduler.state})
        self.executor.apply(run, actions)
        for (node_id, attempt), record in records.items():
            self.intake.reconcile(run, record, node_id, attempt)
        for node_id, node in run.scheduler.nodes.items():
            if (
                node.state.value == "running"
                and node_id not in run.worker_lease
                and not node.spec.is_coordinator_fn
            ):
                run.worker_lease[node_id] = now + self.cfg.worker_lease_ttl_sec
        buffered, run.buffered = run.buffered or [], None
        for message in buffered:
            self.intake.on_status(run, message)
        if status.cancel_requested and not run.scheduler.state.terminal:
            self.executor.apply(run, run.scheduler.cancel(status.cancel_requested, now))

    async def renew_forever(self) -> None:
        interval = self.cfg.task_lease_sec / 3
        while True:
            await asyncio.sleep(interval)
            asked = time.monotonic()
            try:
                held = await self.store.renew_leases(
                    self.cfg.coordinator_id, self.cfg.task_lease_sec, time.time()
                )
            except Exception as exc:  # keep trying: the lease outlives a few failed renewals
                log.warning("coordinator %s: renewing leases failed: %s", self.cfg.coordinator_id, exc)
                continue
            for run in list(self.tasks.values()):
                # A task claimed while the renewal read was under way may be missing from
                # it: only a claim older than the read is proof of a loss.
                if run.task_id not in held and not run.ended and run.held_since < asked:
                    self._on_drop(run, "another coordinator holds it now")
            if held - self.tasks.keys():  # ours in the store, not in memory (a claim whose reply was lost)
                self.wake_adoption.set()

    # -- attempts --------------------------------------------------------------------

    async def check_attempts_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_check_interval_sec)
            for run in list(self.tasks.values()):
                try:
                    await self.check_attempts(run)
                except Exception as exc:
                    log.warning("task %s: checking its attempts failed: %s", run.task_id, exc)

    async def _run_records(
        self, task_id: str, attempts: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], RunRecord]:
        """The run records of these (node id, attempt)s that exist, each read by its key."""
        keys = list(attempts)
        found = await asyncio.gather(*(self.store.get_run(task_id, n, a) for n, a in keys))
        return {key: record for key, record in zip(keys, found, strict=True) if record is not None}

    async def check_attempts(self, run: TaskRun) -> None:
        if run.dropped or run.ended or run.buffered is not None:
            return
        now = time.time()
        expired = [n for n, until in run.worker_lease.items() if until < now]
        unaccepted = [n for n, sent in run.sent_at.items() if sent + self.cfg.accept_timeout_sec < now]
        if not expired and not unaccepted:
            return
        attempts = {n: run.scheduler.nodes[n].attempt for n in {*expired, *unaccepted}}
        records = await self._run_records(run.task_id, attempts.items())
        for node_id in expired:
            attempt = run.scheduler.nodes[node_id].attempt
            record = records.get((node_id, attempt))
            if record is not None and record.state == "running" and record.lease_until >= now:
                run.worker_lease[node_id] = record.lease_until  # heartbeats lost, lease renewed in the store
            elif record is not None and record.state != "running":
                self.intake.reconcile(run, record, node_id, attempt)
            else:
                run.worker_lease.pop(node_id, None)
                self.intake.lost(run, node_id, attempt, "lease expired: no heartbeat from its worker")
        for node_id in unaccepted:
            attempt = run.scheduler.nodes[node_id].attempt
            record = records.get((node_id, attempt))
            if record is not None:
                self.intake.reconcile(run, record, node_id, attempt)
            elif run.scheduler.nodes[node_id].state.value == "queued":
                self.executor.send_elsewhere(run, node_id, attempt, "not accepted in time", pause=False)
