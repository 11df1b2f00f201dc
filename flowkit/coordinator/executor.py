"""Carrying out the scheduler's decisions: state changes, commands, retries, stops, functions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from ..config import CoordinatorConfig
from ..errors import HandlerError
from ..metrics import numeric_metrics
from ..protocol import SIGNALS_TOPIC, Envelope, Kind, RunCommand, command_topic
from ..states import NodeError, State
from ..store.base import Store
from .functions import FunctionContext, call_function
from .outbox import Outbox
from .scheduler import Action, Dispatch, NodeChanged, RetryLater, StopRunning, TaskEnded, TaskSuspended
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")

_LEAVES_ROLE = frozenset({State.FINISHED, State.FAILED, State.CANCELLED, State.DEFERRED})
RESEND_PAUSE_MIN_SEC, RESEND_PAUSE_MAX_SEC = 0.05, 5.0
"""Pause before a declined command is sent again, doubling with each decline: when every
worker of the role is busy, the command circles at a bounded rate."""


class Executor:
    """Applies actions to a TaskRun (in memory, queued for the outbox) and keeps the
    per-role concurrency limits (``cfg.role_concurrency``)."""

    def __init__(
        self,
        cfg: CoordinatorConfig,
        store: Store,
        outbox: Outbox,
        live_roles: Callable[[], set[str]],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.outbox = outbox
        self._live_roles = live_roles
        self._timers: set[asyncio.TimerHandle] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, set[tuple[str, str]]] = {}
        self._waiting: dict[str, deque[tuple[TaskRun, Dispatch]]] = {}

    def apply(self, run: TaskRun, actions: list[Action]) -> None:
        if run.dropped:
            return
        for action in actions:
            if isinstance(action, NodeChanged):
                self._node_changed(run, action)
            elif isinstance(action, Dispatch):
                self._dispatch(run, action)
            elif isinstance(action, RetryLater):
                self._retry_later(run, action)
            elif isinstance(action, StopRunning):
                self._stop_running(run, action)
            elif isinstance(action, TaskEnded):
                self._end_task(run, action.state)
            elif isinstance(action, TaskSuspended):
                log.info("task %s %s", run.task_id, "suspended" if action.suspended else "resumed")
                run.set_task({"suspended": action.suspended})
        if run.unflushed:
            self.outbox.mark(run)

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    def spawn(self, job: asyncio.Task[None]) -> None:
        """Own a background job (cancelled and awaited at stop)."""
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def forget(self, run: TaskRun) -> None:
        """The task left this coordinator: free its role slots and stop its functions."""
        for role, keys in self._in_flight.items():
            released = {k for k in keys if k[0] == run.task_id}
            keys -= released
            for _ in released:
                self._release_slot(role)
        run.dropped = True
        for job in run.functions.values():
            job.cancel()

    # -- actions ---------------------------------------------------------------------

    def _node_changed(self, run: TaskRun, action: NodeChanged) -> None:
        state = action.fields.get("status")
        if state == State.FAILED:
            log.warning("task %s node %s failed: %s", run.task_id, action.node_id, action.fields.get("error"))
        run.set_node(action.node_id, dict(action.fields), may_wait=action.may_wait)
        if state in _LEAVES_ROLE:
            run.sent_at.pop(action.node_id, None)
            run.worker_lease.pop(action.node_id, None)
            role = run.status.nodes[action.node_id].type
            keys = self._in_flight.get(role)
            if keys is not None and (run.task_id, action.node_id) in keys:
                keys.discard((run.task_id, action.node_id))
                self._release_slot(role)

    def _dispatch(self, run: TaskRun, action: Dispatch) -> None:
        spec = run.scheduler.nodes[action.node_id].spec
        run.hops.pop(action.node_id, None)  # a new attempt (or a restored one) starts at its home partition
        if spec.is_coordinator_fn:
            run.after_flush.append(lambda: self._start_function(run, action))
            return

        limit = self.cfg.role_concurrency.get(spec.type)
        if limit is not None:
            keys = self._in_flight.setdefault(spec.type, set())
            key = (run.task_id, spec.node_id)
            if key not in keys and len(keys) >= limit:
                self._waiting.setdefault(spec.type, deque()).append((run, action))
                run.set_node(
                    spec.node_id, {"note": f"waiting: role '{spec.type}' is at its limit of {limit}"}
                )
                return
            keys.add(key)
        self.send_run(run, action)

    def send_elsewhere(self, run: TaskRun, node_id: str, attempt: int, why: str, pause: bool) -> None:
        """Send the attempt's RUN again on another partition (another worker), at once or,
        with ``pause``, after a pause that grows with every hop."""
        hops = run.hops.get(node_id, 0) + 1
        run.hops[node_id] = hops
        run.sent_at.pop(node_id, None)
        delay = min(RESEND_PAUSE_MIN_SEC * 2 ** (hops - 1), RESEND_PAUSE_MAX_SEC) if pause else 0.0
        log.info(
            "task %s node %s attempt %d: %s; sending it elsewhere (hop %d)",
            run.task_id,
            node_id,
            attempt,
            why,
            hops,
        )
        run.set_node(node_id, {"note": f"sent again: {why}"})
        self.outbox.mark(run)

        def fire() -> None:
            self._timers.discard(handle)
            node = run.scheduler.nodes[node_id]
            if not run.dropped and not run.ended and node.attempt == attempt and node.state == State.QUEUED:
                self.send_run(run, Dispatch(node_id, attempt))

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def send_run(self, run: TaskRun, action: Dispatch) -> None:
        spec = run.scheduler.nodes[action.node_id].spec
        command = RunCommand(
            role=spec.type,
            io=spec.io.model_dump(mode="json"),
            params=run.status.params,
            depends_on=list(spec.depends_on),
        )
        log.debug(
            "task %s node %s: dispatch attempt %d to %s", run.task_id, spec.node_id, action.attempt, spec.type
        )
        run.sent_at[spec.node_id] = time.time()
        if spec.type not in self._live_roles():
            run.set_node(spec.node_id, {"note": f"no live worker for role '{spec.type}'"})
        run.send(
            command_topic(spec.type),
            Envelope(
                kind=Kind.RUN,
                task_id=run.task_id,
                node_id=spec.node_id,
                attempt=action.attempt,
                payload=command.model_dump(),
                dedup_key=f"{run.task_id}:{spec.node_id}:{action.attempt}:run",
                hop=run.hops.get(spec.node_id, 0),
            ),
        )
        self.outbox.mark(run)

    def _release_slot(self, role: str) -> None:
        waiting = self._waiting.get(role)
        while waiting:
            run, action = waiting.popleft()
            node = run.scheduler.nodes[action.node_id]
            if node.attempt == action.attempt and node.state == State.QUEUED and not run.ended:
                self._in_flight.setdefault(role, set()).add((run.task_id, action.node_id))
                run.set_node(action.node_id, {"note": None})
                self.send_run(run, action)
                return

    async def _bar(self, run: TaskRun, node_id: str, attempt: int) -> None:
        """A stopped attempt that no worker has claimed yet never starts: workers need not
        read the node's state before each run to find out. One that has started is
        stopped by the signal (and the workers' poll of the store)."""
        try:
            barred = await self.store.bar_run(run.task_id, node_id, attempt, time.time())
        except Exception as exc:  # the signal and the workers' poll still stop it
            log.warning("task %s node %s: could not bar attempt %d (%s)", run.task_id, node_id, attempt, exc)
            return
        if barred:
            self.apply(run, run.scheduler.node_cancelled(node_id, attempt, time.time()))

    def _retry_later(self, run: TaskRun, action: RetryLater) -> None:
        log.info(
            "task %s node %s: retry as attempt %d in %.1fs",
            run.task_id,
            action.node_id,
            action.attempt,
            action.delay_sec,
        )

        def fire() -> None:
            self._timers.discard(handle)
            if not run.ended:
                self.apply(run, run.scheduler.retry_due(action.node_id, action.attempt))

        handle = asyncio.get_running_loop().call_later(action.delay_sec, fire)
        self._timers.add(handle)

    def _stop_running(self, run: TaskRun, action: StopRunning) -> None:
        job = run.functions.get(action.node_id)
        if job is not None:
            if job is not asyncio.current_task():  # a function failing stops itself by returning
                job.cancel()
            return
        if run.scheduler.nodes[action.node_id].spec.is_coordinator_fn:
            return  # not started yet: _start_function sees it stopped
        self.spawn(asyncio.create_task(self._bar(run, action.node_id, action.attempt)))
        run.send(
            SIGNALS_TOPIC,
            Envelope(
                kind=Kind.CANCEL,
                task_id=run.task_id,
                node_id=action.node_id,
                attempt=action.attempt,
                payload={"reason": action.reason},
            ),
        )

    def _end_task(self, run: TaskRun, state: State) -> None:
        failed = [n for n in run.status.nodes.values() if n.status == State.FAILED and n.error is not None]
        error = None
        if state == State.FAILED and failed:
            first = failed[0]
            code = first.error.code if first.error else "failed"
            error = NodeError(code=code, message=f"node '{first.node_id}' failed", permanent=True)
        run.set_task({"status": state, "finished_at": time.time(), "error": error})
        run.worker_lease.clear()
        run.sent_at.clear()
        run.ended = True
        log.info("task %s %s", run.task_id, state.value)

    # -- coordinator functions -----------------------------------------------------------

    def _start_function(self, run: TaskRun, action: Dispatch) -> None:
        """Started once its dispatch is written (so an adopting coordinator knows to run it again)."""
        node = run.scheduler.nodes[action.node_id]
        if run.dropped or node.attempt != action.attempt or node.state.terminal:
            return
        if node.state == State.CANCELLING:  # cancelled before it could start
            self.apply(run, run.scheduler.node_cancelled(action.node_id, action.attempt, time.time()))
            return
        job = asyncio.create_task(self._run_function(run, action))
        run.functions[action.node_id] = job
        self.spawn(job)

        def cancelled(job: asyncio.Task[None]) -> None:
            # Also when cancelled before its first step, which runs none of its code.
            if job.cancelled():
                run.functions.pop(action.node_id, None)
                self.apply(run, run.scheduler.node_cancelled(action.node_id, action.attempt, time.time()))

        job.add_done_callback(cancelled)

    async def _run_function(self, run: TaskRun, action: Dispatch) -> None:
        spec = run.scheduler.nodes[action.node_id].spec
        node_id, sched = spec.node_id, run.scheduler
        self.apply(run, sched.node_started(node_id, action.attempt, self.cfg.coordinator_id, time.time()))
        ctx = FunctionContext(
            task_id=run.task_id,
            node_id=node_id,
            params=run.status.params,
            depends_on=list(spec.depends_on),
            store=self.store,
            status=run.status,
        )
        try:
            metrics = await call_function(spec.io.fn or "", ctx, spec.io.fn_args)
            await self.store.complete_artifacts(run.task_id, node_id)
        except Exception as exc:
            code, permanent = (
                (exc.code, exc.permanent) if isinstance(exc, HandlerError) else (type(exc).__name__, False)
            )
            log.info("task %s node %s: function %s failed: %s", run.task_id, node_id, spec.io.fn, exc)
            error = NodeError(code=code, message=str(exc), permanent=permanent)
            self.apply(run, sched.node_failed(node_id, action.attempt, error, time.time()))
            return
        finally:
            run.functions.pop(node_id, None)
        if ctx.result:
            run.set_task({"result": {**run.status.result, **ctx.result}})
        run.set_node(node_id, {"metrics": numeric_metrics(metrics)})
        self.apply(run, sched.node_finished(node_id, action.attempt, time.time()))
