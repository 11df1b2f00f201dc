"""The worker: takes node runs for its roles from the bus and reports how they went."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..bus.base import Bus, Subscription
from ..config import WorkerConfig
from ..errors import ConfigError
from ..protocol import ANNOUNCE_TOPIC, SIGNALS_TOPIC, STATUS_TOPIC, Envelope, Kind, RunCommand, command_topic
from ..states import State
from ..store.base import Store
from ..wiring import resolve_backends
from .adapters import ArtifactFeed
from .context import ArtifactsWriter, RunContext
from .handlers.base import Handler
from .node_run import NodeRun, Outcome

log = logging.getLogger("flowkit.worker")

_STOPPED_IN_STORE = frozenset({State.CANCELLING, State.CANCELLED, State.FAILED})


@dataclass
class _ActiveRun:
    ctx: RunContext
    job: asyncio.Task[Outcome]
    started_at: float = field(default_factory=time.time)

    @property
    def task_id(self) -> str:
        return self.ctx.task_id

    @property
    def node_id(self) -> str:
        return self.ctx.node_id

    @property
    def attempt(self) -> int:
        return self.ctx.attempt


class Worker:
    """Runs the handlers of ``cfg.roles``; at most ``cfg.capacity`` node runs at once.

    ``Worker(db=..., cfg=WorkerConfig(roles=["processor"]), handlers={"processor": H()})``
    as in the seed docs; embedded runs pass ``store=`` and ``bus=`` instead of ``db``.
    """

    def __init__(
        self,
        db: Any = None,
        cfg: WorkerConfig | None = None,
        handlers: dict[str, Handler] | None = None,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.cfg = cfg or WorkerConfig()
        self.handlers = dict(handlers or {})
        if not self.cfg.roles:
            self.cfg = self.cfg.model_copy(update={"roles": list(self.handlers)})
        missing = [role for role in self.cfg.roles if role not in self.handlers]
        if missing:
            raise ConfigError(
                f"worker roles {missing} have no handler; handlers given: {sorted(self.handlers)}"
            )
        self.store, self.bus = resolve_backends(db, store, bus, self.cfg.kafka_bootstrap)
        self.worker_id: str = self.cfg.worker_id or ""
        self._active: dict[tuple[str, str], _ActiveRun] = {}
        self.last_heartbeat_time: float | None = None
        """When this worker last sent heartbeats (epoch seconds), for health checks."""
        self._slots = asyncio.Semaphore(self.cfg.capacity)
        self._subscriptions: list[Subscription] = []
        self._loops: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def busy(self) -> bool:
        return bool(self._active)

    _busy = busy  # the seed docs' health check reads ``worker._busy``

    @property
    def active(self) -> _ActiveRun | None:
        """The oldest run in progress (``task_id``, ``node_id``, ``attempt``), or None."""
        return next(iter(self._active.values()), None)

    @property
    def active_runs(self) -> list[_ActiveRun]:
        """Every run in progress (up to ``cfg.capacity``)."""
        return list(self._active.values())

    async def start(self) -> None:
        if self._started:
            raise RuntimeError(f"worker {self.worker_id} is already started")
        self._started = True
        await self.bus.start()
        for role in self.cfg.roles:
            sub = await self.bus.subscribe([command_topic(role)], group=f"flowkit.workers.{role}")
            self._subscriptions.append(sub)
            self._loops.append(asyncio.create_task(self._take_runs(sub), name=f"{self.worker_id}:{role}"))
        signals = await self.bus.subscribe([SIGNALS_TOPIC], group=f"flowkit.worker.{self.worker_id}")
        self._subscriptions.append(signals)
        self._loops.append(asyncio.create_task(self._take_signals(signals)))
        self._loops.append(asyncio.create_task(self._heartbeats()))
        self._loops.append(asyncio.create_task(self._poll_cancellations()))
        await self._announce("online")
        log.info("worker %s started for roles %s", self.worker_id, self.cfg.roles)

    async def stop(self) -> None:
        """Stop taking work, hand back runs in flight (they are retried), close."""
        if not self._started:
            return
        self._started = False
        for sub in self._subscriptions:
            await sub.close()
        for loop in self._loops:
            loop.cancel()
        for run in list(self._active.values()):
            run.job.cancel()
        await asyncio.gather(*self._loops, *self._runs, return_exceptions=True)
        self._loops.clear()
        with contextlib.suppress(Exception):
            await self._announce("offline")

    # -- taking work ---------------------------------------------------------------

    async def _take_runs(self, sub: Subscription) -> None:
        deliveries = aiter(sub)
        while True:
            await self._slots.acquire()  # take a message only when a slot is free
            try:
                delivery = await anext(deliveries)
            except StopAsyncIteration:
                self._slots.release()
                return
            message = delivery.message
            if message.kind != Kind.RUN:
                self._slots.release()
                await delivery.ack()
                continue
            task = asyncio.create_task(self._run(message))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
            await delivery.ack()

    async def _run(self, message: Envelope) -> None:
        key = (message.task_id, message.node_id)
        try:
            try:
                cmd = RunCommand.model_validate(message.payload)
            except ValidationError as exc:
                log.error(
                    "task %s node %s: malformed run command, set aside: %s",
                    message.task_id,
                    message.node_id,
                    exc,
                )
                return
            ctx = await self._context(message, cmd)
            if await self._stopped_while_queued(message):
                await self._publish(message, Kind.CANCELLED)
                return
            node_run = NodeRun(
                self.handlers[cmd.role],
                ctx,
                cmd.io,
                self._feed(ctx),
                lambda uid, metrics: self._report_batch(message, uid, metrics),
            )
            job = asyncio.create_task(node_run.execute())
            self._active[key] = _ActiveRun(ctx, job)
            await self._publish(message, Kind.ACCEPTED)
            try:
                outcome = await job
            except asyncio.CancelledError:
                if not self._started:  # shutting down: give the node back for a retry
                    await self._publish(
                        message,
                        Kind.FAILED,
                        {"code": "worker_shutdown", "permanent": False, "message": "worker stopped mid-run"},
                    )
                raise
            await self._report_outcome(message, outcome)
        finally:
            self._active.pop(key, None)
            self._slots.release()

    async def _stopped_while_queued(self, message: Envelope) -> bool:
        """A cancel (or upstream failure) that came while this command waited for a slot
        found no run to signal; the node's state in the store still says so."""
        state = await self.store.node_state(message.task_id, message.node_id)
        if state == State.CANCELLING or (state is not None and state.terminal):
            log.info(
                "task %s node %s: %s before it started, not run", message.task_id, message.node_id, state
            )
            return True
        return False

    async def _context(self, message: Envelope, cmd: RunCommand) -> RunContext:
        writer = ArtifactsWriter(
            self.store, message.task_id, message.node_id, lambda: self._publish(message, Kind.ARTIFACT)
        )
        checkpoint = await self.store.load_checkpoint(message.task_id, message.node_id)
        return RunContext(
            task_id=message.task_id,
            node_id=message.node_id,
            attempt=message.attempt,
            role=cmd.role,
            worker_id=self.worker_id,
            params=cmd.params,
            artifacts_writer=writer,
            store=self.store,
            checkpoint=checkpoint,
        )

    def _feed(self, ctx: RunContext) -> ArtifactFeed:
        return ArtifactFeed(self.store, ctx.task_id, self.cfg.pull_poll_ms_default, ctx.cancel_flag)

    # -- reporting -----------------------------------------------------------------

    async def _report_batch(self, run: Envelope, batch_uid: str, metrics: dict[str, float]) -> None:
        await self._publish(
            run,
            Kind.BATCH_DONE,
            {"batch_uid": batch_uid, "metrics": metrics},
            dedup=f"{run.task_id}:{run.node_id}:batch:{batch_uid}",
        )

    async def _report_outcome(self, run: Envelope, outcome: Outcome) -> None:
        if outcome.state == "finished":
            await self._publish(run, Kind.FINISHED, {"metrics": outcome.metrics})
        elif outcome.state == "cancelled":
            await self._publish(run, Kind.CANCELLED, {})
        else:
            assert outcome.error is not None
            await self._publish(run, Kind.FAILED, outcome.error.model_dump())

    async def _publish(
        self, run: Envelope, kind: Kind, payload: dict[str, Any] | None = None, dedup: str = ""
    ) -> None:
        message = Envelope(
            kind=kind,
            task_id=run.task_id,
            node_id=run.node_id,
            attempt=run.attempt,
            worker_id=self.worker_id,
            payload=payload or {},
            dedup_key=dedup or f"{run.task_id}:{run.node_id}:{run.attempt}:{kind.value}",
        )
        await self.bus.publish(STATUS_TOPIC, message)

    # -- signals, heartbeats, announcements ------------------------------------------

    async def _take_signals(self, sub: Subscription) -> None:
        async for delivery in sub:
            message = delivery.message
            if message.kind == Kind.CANCEL:
                self._cancel(message)
            await delivery.ack()

    def _cancel(self, message: Envelope) -> None:
        run = self._active.get((message.task_id, message.node_id))
        if run is not None and run.ctx.attempt == message.attempt:
            self._request_cancel(run, message.payload)

    def _request_cancel(self, run: _ActiveRun, meta: dict[str, Any]) -> None:
        """Raise the run's cancel flag; interrupt the handler if it ignores it past the grace."""
        if run.ctx.cancel_flag.is_set():
            return
        run.ctx.cancel_meta.update(meta)
        run.ctx.cancel_flag.set()
        log.info(
            "task %s node %s: cancel requested (%s)",
            run.ctx.task_id,
            run.ctx.node_id,
            meta.get("reason", "unknown"),
        )
        asyncio.get_running_loop().call_later(self.cfg.cancel_grace_sec, self._interrupt, run)

    async def _poll_cancellations(self) -> None:
        """The store is the second source of cancellation (seed: "database flags"): a signal
        missed while a run was starting, or sent while this worker was unreachable, still
        reaches the handler within ``db_cancel_poll_ms``."""
        while True:
            await asyncio.sleep(self.cfg.db_cancel_poll_ms / 1000)
            for run in list(self._active.values()):
                state = await self.store.node_state(run.ctx.task_id, run.ctx.node_id)
                if state in _STOPPED_IN_STORE:
                    self._request_cancel(run, {"reason": f"node is {state} in the store", "source": "db"})

    @staticmethod
    def _interrupt(run: _ActiveRun) -> None:
        """The handler ignored the cancel flag past the grace period: interrupt it."""
        if not run.job.done():
            run.job.cancel()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.hb_interval_sec)
            self.last_heartbeat_time = time.time()
            for run in list(self._active.values()):
                ctx = run.ctx
                await self.bus.publish(
                    STATUS_TOPIC,
                    Envelope(
                        kind=Kind.HEARTBEAT,
                        task_id=ctx.task_id,
                        node_id=ctx.node_id,
                        attempt=ctx.attempt,
                        worker_id=self.worker_id,
                        payload={"batches": ctx.processed_count},
                    ),
                )

    async def _announce(self, status: str) -> None:
        await self.bus.publish(
            ANNOUNCE_TOPIC,
            Envelope(
                kind=Kind.ANNOUNCE,
                worker_id=self.worker_id,
                payload={
                    "worker_id": self.worker_id,
                    "type": ",".join(self.cfg.roles),
                    "capabilities": {"roles": list(self.cfg.roles)},
                    "version": self.cfg.worker_version,
                    "capacity": {"tasks": self.cfg.capacity},
                    "status": status,
                },
            ),
        )
