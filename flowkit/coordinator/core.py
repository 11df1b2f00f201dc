"""The coordinator: turns scheduling decisions into bus messages and store writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..bus.base import Bus, Subscription
from ..config import CoordinatorConfig
from ..errors import FlowKitError, HandlerError, TaskNotFound
from ..graph import GraphSpec, validate_graph
from ..metrics import add_metrics, numeric_metrics, sum_metrics
from ..protocol import SIGNALS_TOPIC, STATUS_TOPIC, Envelope, Kind, RunCommand, command_topic
from ..states import NodeError, NodeStatus, State, TaskStatus, apply_fields
from ..store.base import Store
from ..wiring import resolve_backends
from .functions import FunctionContext, call_function
from .scheduler import Action, Dispatch, NodeChanged, RetryLater, Scheduler, StopRunning, TaskEnded

log = logging.getLogger("flowkit.coordinator")


@dataclass
class _TaskRun:
    """The coordinator's live view of a task it owns."""

    graph: GraphSpec
    scheduler: Scheduler
    status: TaskStatus
    done: asyncio.Event = field(default_factory=asyncio.Event)
    seen_batches: dict[str, set[str]] = field(default_factory=dict)
    lease_until: dict[str, float] = field(default_factory=dict)
    functions: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class Coordinator:
    """Schedules task graphs over workers (seed docs: ``Coordinator(db=..., cfg=...)``).

    >>> task_id = await coordinator.create_task(params={}, graph=graph)
    >>> status = await coordinator.wait_task(task_id)
    """

    def __init__(
        self,
        db: Any = None,
        cfg: CoordinatorConfig | None = None,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.cfg = cfg or CoordinatorConfig()
        self.store, self.bus = resolve_backends(db, store, bus, self.cfg.kafka_bootstrap)
        self._tasks: dict[str, _TaskRun] = {}
        self._subscription: Subscription | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._started = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("coordinator is already started")
        self._started = True
        await self.bus.start()
        self._subscription = await self.bus.subscribe([STATUS_TOPIC], group="flowkit.coordinators")
        self._loops.append(asyncio.create_task(self._consume(self._subscription), name="coordinator-status"))
        self._loops.append(asyncio.create_task(self._check_leases(), name="coordinator-leases"))
        log.info("coordinator %s started", self.cfg.coordinator_id)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for timer in self._timers:
            timer.cancel()
        if self._subscription is not None:
            await self._subscription.close()
        jobs = [
            *self._loops,
            *self._retries,
            *(j for run in self._tasks.values() for j in run.functions.values()),
        ]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._loops.clear()

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
    ) -> str:
        """Validate ``graph`` (raises GraphError naming node and field), store it, start it."""
        if not self._started:
            raise RuntimeError("call `await coordinator.start()` before create_task()")
        if graph is None:
            raise FlowKitError("create_task() needs graph=")
        spec = validate_graph(graph, roles=self.cfg.worker_types, max_nodes=self.cfg.max_nodes)
        task_id = task_id or uuid.uuid4().hex
        status = TaskStatus(
            task_id=task_id,
            params=dict(params or {}),
            created_at=time.time(),
            nodes={n.node_id: NodeStatus(node_id=n.node_id, type=n.type) for n in spec.nodes},
        )
        await self.store.create_task(status, spec.model_dump(mode="json"))
        run = _TaskRun(spec, Scheduler(spec), status)
        self._tasks[task_id] = run
        log.info("task %s created: %d nodes", task_id, len(spec.nodes))
        await self._update_task(run, {"status": State.RUNNING})
        await self._apply(run, run.scheduler.start())
        return task_id

    async def get_status(self, task_id: str) -> TaskStatus:
        status = await self.store.get_task(task_id)
        if status is None:
            raise TaskNotFound(task_id)
        return status

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Wait until the task is finished, failed or cancelled; return its status."""
        run = self._tasks.get(task_id)
        if run is None:
            status = await self.get_status(task_id)
            if status.status.terminal:
                return status
            raise FlowKitError(f"task '{task_id}' is not owned by this coordinator")
        await asyncio.wait_for(run.done.wait(), timeout)
        return await self.get_status(task_id)

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
        """Stop running handlers cooperatively (``ctx.cancel_flag``) and cancel the rest."""
        run = self._tasks.get(task_id)
        if run is None:
            await self.get_status(task_id)  # raises TaskNotFound
            raise FlowKitError(f"task '{task_id}' is not owned by this coordinator")
        log.info("task %s: cancelling (%s)", task_id, reason)
        actions = run.scheduler.cancel(reason, time.time())
        if run.scheduler.state == State.CANCELLING:
            await self._update_task(run, {"status": State.CANCELLING})
        await self._apply(run, actions)

    # -- status messages -------------------------------------------------------------

    async def _consume(self, sub: Subscription) -> None:
        async for delivery in sub:
            try:
                await self._on_status(delivery.message)
            except Exception:
                log.exception(
                    "status message %s for task %s could not be applied",
                    delivery.message.kind,
                    delivery.message.task_id,
                )
            await delivery.ack()

    async def _on_status(self, msg: Envelope) -> None:
        run = self._tasks.get(msg.task_id)
        if run is None or msg.node_id not in run.scheduler.nodes:
            return
        sched, now = run.scheduler, time.time()
        if msg.kind == Kind.ACCEPTED:
            run.lease_until[msg.node_id] = now + self.cfg.worker_lease_ttl_sec
            await self._apply(run, sched.node_started(msg.node_id, msg.attempt, msg.worker_id, now))
        elif msg.kind == Kind.HEARTBEAT:
            if msg.node_id in run.lease_until:
                run.lease_until[msg.node_id] = now + self.cfg.worker_lease_ttl_sec
        elif msg.kind == Kind.ARTIFACT:
            await self._apply(run, sched.first_batch(msg.node_id, msg.attempt))
        elif msg.kind == Kind.BATCH_DONE:
            await self._on_batch(run, msg)
        elif msg.kind == Kind.FINISHED:
            await self._final_metrics(run, msg.node_id, msg.payload.get("metrics") or {})
            await self._apply(run, sched.node_finished(msg.node_id, msg.attempt, now))
        elif msg.kind == Kind.FAILED:
            error = NodeError.model_validate(msg.payload)
            await self._apply(run, sched.node_failed(msg.node_id, msg.attempt, error, now))
        elif msg.kind == Kind.CANCELLED:
            await self._apply(run, sched.node_cancelled(msg.node_id, msg.attempt, now))

    async def _on_batch(self, run: _TaskRun, msg: Envelope) -> None:
        if msg.attempt != run.scheduler.nodes[msg.node_id].attempt:
            return
        seen = run.seen_batches.setdefault(msg.node_id, set())
        uid = str(msg.payload.get("batch_uid"))
        if uid in seen:
            return  # a replayed message: counted already
        seen.add(uid)
        node = run.status.nodes[msg.node_id]
        metrics = add_metrics(dict(node.metrics), numeric_metrics(msg.payload.get("metrics")))
        await self._update_node(run, msg.node_id, {"batches": node.batches + 1, "metrics": metrics})
        await self._apply(run, run.scheduler.first_batch(msg.node_id, msg.attempt))

    async def _final_metrics(self, run: _TaskRun, node_id: str, final: dict[str, float]) -> None:
        """Recount from the store's batch records (exactly once), then merge finalize's metrics."""
        records = await self.store.batch_records(run.status.task_id, node_id)
        metrics = sum_metrics(records.values())
        metrics.update(final)
        run.seen_batches.pop(node_id, None)
        await self._update_node(run, node_id, {"batches": len(records), "metrics": metrics})

    # -- carrying out decisions ------------------------------------------------------

    async def _apply(self, run: _TaskRun, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, NodeChanged):
                if action.fields.get("status") == State.FAILED:
                    error = action.fields.get("error")
                    log.warning("task %s node %s failed: %s", run.status.task_id, action.node_id, error)
                await self._update_node(run, action.node_id, action.fields)
            elif isinstance(action, Dispatch):
                await self._dispatch(run, action)
            elif isinstance(action, RetryLater):
                self._retry_later(run, action)
            elif isinstance(action, StopRunning):
                await self._stop_running(run, action)
            elif isinstance(action, TaskEnded):
                await self._end_task(run, action.state)

    async def _dispatch(self, run: _TaskRun, action: Dispatch) -> None:
        spec = run.scheduler.nodes[action.node_id].spec
        task_id = run.status.task_id
        if spec.is_coordinator_fn:
            job = asyncio.create_task(self._run_function(run, action))
            run.functions[action.node_id] = job
            return
        command = RunCommand(
            role=spec.type,
            io=spec.io.model_dump(mode="json"),
            params=run.status.params,
            depends_on=list(spec.depends_on),
        )
        log.debug(
            "task %s node %s: dispatch attempt %d to %s", task_id, spec.node_id, action.attempt, spec.type
        )
        await self.bus.publish(
            command_topic(spec.type),
            Envelope(
                kind=Kind.RUN,
                task_id=task_id,
                node_id=spec.node_id,
                attempt=action.attempt,
                payload=command.model_dump(),
                dedup_key=f"{task_id}:{spec.node_id}:{action.attempt}:run",
            ),
        )

    async def _run_function(self, run: _TaskRun, action: Dispatch) -> None:
        spec = run.scheduler.nodes[action.node_id].spec
        task_id, node_id, sched = run.status.task_id, spec.node_id, run.scheduler
        await self._apply(
            run, sched.node_started(node_id, action.attempt, self.cfg.coordinator_id, time.time())
        )
        ctx = FunctionContext(
            task_id=task_id,
            node_id=node_id,
            params=run.status.params,
            depends_on=list(spec.depends_on),
            store=self.store,
            status=run.status,
        )
        try:
            metrics = await call_function(spec.io.fn or "", ctx, spec.io.fn_args)
        except asyncio.CancelledError:
            await self._apply(run, sched.node_cancelled(node_id, action.attempt, time.time()))
            return
        except Exception as exc:
            code, permanent = (
                (exc.code, exc.permanent) if isinstance(exc, HandlerError) else (type(exc).__name__, False)
            )
            log.info("task %s node %s: function %s failed: %s", task_id, node_id, spec.io.fn, exc)
            error = NodeError(code=code, message=str(exc), permanent=permanent)
            await self._apply(run, sched.node_failed(node_id, action.attempt, error, time.time()))
            return
        finally:
            run.functions.pop(node_id, None)
        if ctx.result:
            await self._update_task(run, {"result": {**run.status.result, **ctx.result}})
        await self.store.complete_artifacts(task_id, node_id)
        await self._update_node(run, node_id, {"metrics": numeric_metrics(metrics)})
        await self._apply(run, sched.node_finished(node_id, action.attempt, time.time()))

    def _retry_later(self, run: _TaskRun, action: RetryLater) -> None:
        log.info(
            "task %s node %s: retry as attempt %d in %.1fs",
            run.status.task_id,
            action.node_id,
            action.attempt,
            action.delay_sec,
        )

        def fire() -> None:
            self._timers.discard(handle)
            task = asyncio.create_task(
                self._apply(run, run.scheduler.retry_due(action.node_id, action.attempt))
            )
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

        handle = asyncio.get_running_loop().call_later(action.delay_sec, fire)
        self._timers.add(handle)

    async def _stop_running(self, run: _TaskRun, action: StopRunning) -> None:
        job = run.functions.get(action.node_id)
        if job is not None:
            if job is not asyncio.current_task():  # a function failing stops itself by returning
                await self._stop_function(run, action, job)
            return
        await self.bus.publish(
            SIGNALS_TOPIC,
            Envelope(
                kind=Kind.CANCEL,
                task_id=run.status.task_id,
                node_id=action.node_id,
                attempt=action.attempt,
                payload={"reason": action.reason},
            ),
        )

    async def _stop_function(self, run: _TaskRun, action: StopRunning, job: asyncio.Task[None]) -> None:
        """Cancel a coordinator function and wait for it. A job cancelled before its first
        step never runs its own handler, so its node is ended here (a no-op if it was)."""
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        run.functions.pop(action.node_id, None)
        await self._apply(run, run.scheduler.node_cancelled(action.node_id, action.attempt, time.time()))

    async def _end_task(self, run: _TaskRun, state: State) -> None:
        failed = [n for n in run.status.nodes.values() if n.status == State.FAILED and n.error is not None]
        error = None
        if state == State.FAILED and failed:
            first = failed[0]
            error = NodeError(
                code=first.error.code if first.error else "failed",
                message=f"node '{first.node_id}' failed",
                permanent=True,
            )
        await self._update_task(run, {"status": state, "finished_at": time.time(), "error": error})
        run.lease_until.clear()
        run.done.set()
        log.info("task %s %s", run.status.task_id, state.value)

    async def _check_leases(self) -> None:
        """A running node whose worker went silent past its lease is failed (transiently) and retried."""
        while True:
            await asyncio.sleep(self.cfg.lease_check_interval_sec)
            now = time.time()
            for run in list(self._tasks.values()):
                for node_id, until in list(run.lease_until.items()):
                    node = run.scheduler.nodes[node_id]
                    if node.state != State.RUNNING:
                        run.lease_until.pop(node_id, None)
                    elif until < now:
                        run.lease_until.pop(node_id, None)
                        error = NodeError(code="lease_expired", message="worker stopped sending heartbeats")
                        with contextlib.suppress(Exception):
                            await self._apply(
                                run, run.scheduler.node_failed(node_id, node.attempt, error, now)
                            )

    # -- persistence (the live view and the store move together) ----------------------

    async def _update_node(self, run: _TaskRun, node_id: str, fields: dict[str, Any]) -> None:
        apply_fields(run.status.nodes[node_id], fields)
        await self.store.update_node(run.status.task_id, node_id, fields)

    async def _update_task(self, run: _TaskRun, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            setattr(run.status, name, value)
        await self.store.update_task(run.status.task_id, fields)
