"""The worker: takes node runs for its roles from the bus and reports how they went.

Each fact is made durable before it is told: the worker claims the attempt in the store
(its run record) before it acknowledges the RUN command, records each batch before it
reports it, and writes the attempt's outcome before it sends it. So a coordinator that
misses a message finds the fact in the store, and a RUN delivered twice, or to two
workers, runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..backends import resolve_backends
from ..bus.base import Bus, Delivery, Subscription
from ..config import WorkerConfig
from ..errors import ConfigError
from ..protocol import STATUS_TOPIC, Envelope, Kind, RunCommand, command_topic, worker_group
from ..states import NodeError, State
from ..store.base import AttemptInputs, CountedBatch, RunClaim, RunEnd, RunState, Store
from .adapters import ArtifactFeed
from .context import ArtifactsWriter, RunContext
from .dedup import Attempt, TakenAttempts
from .group_commit import GroupCommit
from .handlers.base import Handler
from .node_run import NodeRun, Outcome
from .presence import Presence
from .state import ActiveRun, ActiveRunMirror, DatabaseWorkerState

log = logging.getLogger("flowkit.worker")

CLAIM_TRIES = 5
MIRROR_STOP_SEC = 2.0
STATUS_SEND_TIMEOUT_SEC = 5.0
"""A status message is a fast copy of a fact already in the store: when the broker is
away, the worker does not wait for it longer than this (the coordinator reconciles)."""
ACCEPTED_AFTER_SEC = 0.05
"""A run says it was accepted once it has run this long, or with its first progress
report (``_PROGRESS``), whichever comes first; a shorter run says so in its outcome."""
_PROGRESS = frozenset({Kind.ARTIFACT, Kind.BATCH_DONE})


@dataclass
class _ActiveRun:
    ctx: RunContext
    job: asyncio.Task[Outcome]
    started_at: float = field(default_factory=time.time)
    sends: set[asyncio.Task[None]] = field(default_factory=set)
    """Reports on their way (accepted, batches): the handler does not wait for them, the
    outcome does."""
    accepted_sent: bool = False
    accept_timer: asyncio.TimerHandle | None = None

    def send_behind(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(send)
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

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
    as in the seed docs: ``db`` is a MongoDB database (distributed, over Kafka at
    ``cfg.kafka_bootstrap``); without it, the embedded in-process backend.
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
        self.worker_id: str = self.cfg.worker_id or ""
        self.backends = resolve_backends(db, store, bus, self.cfg, client_id=self.worker_id)
        self.store, self.bus = self.backends.store, self.backends.bus
        self.state = DatabaseWorkerState(self.store, self.worker_id)
        self.active_mirror = ActiveRunMirror(self.state, self._oldest_active)
        self._active: dict[tuple[str, str], _ActiveRun] = {}
        self._slots = asyncio.Semaphore(self.cfg.capacity)
        self.run_writes = asyncio.Lock()
        """This worker's writes of run records, one at a time (a MongoDB-protocol server
        may apply updates of one document as read-modify-write: FerretDB does)."""
        # The slots' claims and outcomes, each kind in one bulk request per round (a run's
        # batches go in groups of their own: BatchWrites).
        self._claims = GroupCommit(self.store.claim_runs, self.run_writes)
        self._ends = GroupCommit(self.store.end_runs, self.run_writes)
        self._commands: list[Subscription] = []
        self._takers: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[None]] = set()
        self._taken = TakenAttempts(self.cfg.dedup_cache_size, self.cfg.dedup_ttl_ms / 1000)
        self.presence = Presence(self)
        self._started = False
        self._stopping = False
        self.started_at: float | None = None
        """When start() finished (None before; health checks measure from it)."""

    @property
    def last_heartbeat_time(self) -> float | None:
        """When this worker last sent heartbeats (epoch seconds), for health checks."""
        return self.presence.last_heartbeat_time

    @property
    def taking_work(self) -> bool:
        """Started, subscribed to its roles' commands, not draining or stopping."""
        return self._started and not self._stopping and self.started_at is not None

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

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError(f"worker {self.worker_id} is already started")
        self._started = True
        await self.backends.acquire()
        try:
            await self._hand_back_interrupted_run()
            self.active_mirror.start()
            for role in self.cfg.roles:
                sub = await self.bus.subscribe([command_topic(role)], group=worker_group(role))
                self._commands.append(sub)
                self._takers.append(
                    asyncio.create_task(self._take_runs(sub), name=f"{self.worker_id}:{role}")
                )
            await self.presence.start()
        except BaseException:
            await self._close(cancel_runs=True)
            raise
        self.started_at = time.time()
        log.info("worker %s started for roles %s", self.worker_id, self.cfg.roles)

    async def drain(self, timeout: float | None = None) -> None:
        """Two-phase stop (SIGTERM): take no new work, give running attempts up to
        ``timeout`` (default ``cfg.drain_timeout_sec``) to finish, hand the rest back."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        await self._stop_taking()
        with contextlib.suppress(Exception):
            await self.presence.announce("draining")
        runs = list(self._runs)
        if runs:
            log.info("worker %s: draining %d running attempt(s)", self.worker_id, len(runs))
            await asyncio.wait(runs, timeout=self.cfg.drain_timeout_sec if timeout is None else timeout)
        await self.stop()

    async def stop(self) -> None:
        """Stop taking work, hand back runs in flight (they run again elsewhere), close."""
        if not self._started:
            return
        self._stopping = True
        await self._close(cancel_runs=True)

    async def _stop_taking(self) -> None:
        for sub in self._commands:
            with contextlib.suppress(Exception):
                await sub.close()
        for taker in self._takers:
            taker.cancel()
        await asyncio.gather(*self._takers, return_exceptions=True)
        self._commands.clear()
        self._takers.clear()

    async def _close(self, cancel_runs: bool) -> None:
        await self._stop_taking()
        if cancel_runs:
            for run in list(self._active.values()):
                run.job.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self.active_mirror.stop(MIRROR_STOP_SEC)
        await self.presence.stop()
        self._started = False
        await self.backends.release()

    async def _hand_back_interrupted_run(self) -> None:
        """Restarted with the same id: the attempt we were running goes back at once."""
        active = await self.state.read_active()
        if active is None:
            return
        if await self.store.end_run(
            active.task_id, active.node_id, active.attempt, self.worker_id, "released", now=time.time()
        ):
            log.info(
                "worker %s: handing back task %s node %s attempt %d (interrupted)",
                self.worker_id,
                active.task_id,
                active.node_id,
                active.attempt,
            )
            await self.bus.publish(
                STATUS_TOPIC,
                self._status(
                    active.task_id,
                    active.node_id,
                    active.attempt,
                    Kind.RELEASED,
                    {"reason": "worker restarted"},
                ),
            )
        await self.state.write_active(None)

    # -- taking work ---------------------------------------------------------------

    async def _take_runs(self, sub: Subscription) -> None:
        deliveries = aiter(sub)
        while True:
            try:
                delivery = await anext(deliveries)
            except StopAsyncIteration:
                return
            attempt = _attempt_key(delivery.message)
            if attempt in self._taken:  # a copy: it must not run again, nor wait for a slot
                log.debug("task %s node %s attempt %d: taken here already, copy dropped", *attempt)
                await delivery.ack()
                continue
            # A slot after the message, not before: an idle role must not hold a slot that
            # another role's commands wait for. Meanwhile the command waits unacknowledged,
            # for a bounded time: then it is declined and the coordinator sends it elsewhere.
            try:
                async with asyncio.timeout(None if not self._slots.locked() else self.cfg.slot_wait_sec):
                    await self._slots.acquire()
            except TimeoutError:
                await self._decline(delivery)
                continue
            # Claimed beside the intake of the next commands, so the claims of a burst go
            # to the store together (one group commit) instead of one round trip each.
            self._taken.take(attempt)
            task = asyncio.create_task(self._take(delivery, attempt))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _take(self, delivery: Delivery, attempt: Attempt) -> None:
        ran = False
        try:
            ran = await self._accept_and_run(delivery)
        finally:
            self._taken.leave(attempt, ran)

    async def _accept_and_run(self, delivery: Delivery) -> bool:
        """In a slot already taken: claim, then run (or give the slot back). True: it ran here."""
        # The attempt's inputs are read while it is claimed: one round trip less before
        # the handler starts (a cancel the read misses reaches the run by signal or poll).
        inputs = asyncio.ensure_future(self._attempt_inputs(delivery.message))
        try:
            command = await self._accept(delivery)
        except BaseException as exc:
            _discard(inputs)
            self._slots.release()
            if not isinstance(exc, Exception):
                raise
            log.exception(
                "task %s node %s: could not take the command",
                delivery.message.task_id,
                delivery.message.node_id,
            )
            return False
        if command is None:
            _discard(inputs)
            self._slots.release()
            return False
        if self._stopping:  # claimed while the worker began to stop: give it back at once
            _discard(inputs)
            try:
                await self._report(delivery.message, "released", Kind.RELEASED, {"reason": "worker stopping"})
            finally:
                self._slots.release()
            return False
        await self._run(delivery.message, command, inputs)
        return True

    async def _decline(self, delivery: Delivery) -> None:
        """Not claimed, so nothing to undo: say so (the coordinator sends it to another
        partition) and let the partition move on."""
        message = delivery.message
        if message.kind == Kind.RUN:
            log.info(
                "task %s node %s attempt %d: no free slot within %.1fs, declined",
                message.task_id,
                message.node_id,
                message.attempt,
                self.cfg.slot_wait_sec,
            )
            dedup = f"{message.task_id}:{message.node_id}:{message.attempt}:declined:{message.hop}"
            await self._publish(message, Kind.DECLINED, {"reason": "no free slot", "hop": message.hop}, dedup)
        await delivery.ack()

    async def _accept(self, delivery: Delivery) -> RunCommand | None:
        """Claim the attempt in the store, then acknowledge the command (None: not ours to run)."""
        message = delivery.message
        command = None
        if message.kind == Kind.RUN:
            try:
                command = RunCommand.model_validate(message.payload)
            except ValidationError as exc:
                log.error(
                    "task %s node %s: malformed run command, set aside: %s",
                    message.task_id,
                    message.node_id,
                    exc,
                )
        if command is not None and command.role not in self.handlers:
            log.error(
                "task %s node %s: no handler for role %r here", message.task_id, message.node_id, command.role
            )
            command = None
        if command is not None and not await self._claim(message):
            command = None
        await delivery.ack()
        return command

    async def _claim(self, message: Envelope) -> bool:
        for attempt in range(CLAIM_TRIES):
            try:
                claimed = await self._claims(
                    RunClaim(
                        message.task_id,
                        message.node_id,
                        message.attempt,
                        self.worker_id,
                        self.cfg.lease_ttl_sec,
                        time.time(),
                    )
                )
            except Exception as exc:  # the coordinator sends it again if we give up
                log.warning(
                    "task %s node %s: claiming attempt %d failed (%s)",
                    message.task_id,
                    message.node_id,
                    message.attempt,
                    exc,
                )
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if not claimed:
                log.debug(
                    "task %s node %s attempt %d: taken by another worker or ended",
                    message.task_id,
                    message.node_id,
                    message.attempt,
                )
            return claimed
        return False

    async def _run(self, message: Envelope, cmd: RunCommand, reading: asyncio.Future[AttemptInputs]) -> None:
        key = (message.task_id, message.node_id)
        try:
            inputs = await reading
            if self._stopped_while_queued(message, inputs.state):
                await self._report(message, "cancelled", Kind.CANCELLED, {})
                return
            ctx = self._context(message, cmd, inputs.checkpoint)
            node_run = NodeRun(
                self.handlers[cmd.role],
                ctx,
                cmd.io,
                self._feed(ctx),
                lambda batches: self._report_batches(message, batches),
                counted=inputs.counted,
            )
            job = asyncio.create_task(node_run.execute())
            active = self._active[key] = _ActiveRun(ctx, job)
            self.active_mirror.changed()  # seed: worker_states' active run, written behind
            # A run that ends within ACCEPTED_AFTER_SEC says it started in its outcome: one
            # message instead of two (a fan-out's nodes run for microseconds).
            active.accept_timer = asyncio.get_running_loop().call_later(
                ACCEPTED_AFTER_SEC, self._report_accepted, message, active
            )
            try:
                outcome = await job
            except asyncio.CancelledError:
                if self._stopping:  # shutting down: give the node back, it runs again elsewhere
                    with contextlib.suppress(Exception):
                        await asyncio.shield(
                            self._report(
                                message, "released", Kind.RELEASED, {"reason": "worker stopped mid-run"}
                            )
                        )
                raise
            finally:
                active.accept_timer.cancel()
            await self._report_outcome(message, outcome)
        except Exception:
            log.exception(
                "task %s node %s: the run broke down; its lease will lapse", message.task_id, message.node_id
            )
        finally:
            self._active.pop(key, None)
            self._slots.release()
            self.active_mirror.changed()

    async def _attempt_inputs(self, message: Envelope) -> AttemptInputs:
        """A first attempt reads nothing: the attempt was just claimed by this worker alone
        (one claim per attempt) and every earlier run of the node had a lower number, so it
        has no checkpoint and no counted batch to read (batch records stay exact without
        the set: the first record wins); and a node stopped before it started had its
        attempt barred by the coordinator (``Store.bar_run``), so the claim failed."""
        if message.attempt == 1:
            return AttemptInputs(None, None, set())
        return await self.store.attempt_inputs(message.task_id, message.node_id)

    def _oldest_active(self) -> ActiveRun | None:
        oldest = self.active
        if oldest is None:
            return None
        ctx = oldest.ctx
        return ActiveRun(ctx.task_id, ctx.node_id, ctx.attempt, ctx.role, oldest.started_at, ctx.checkpoint)

    async def _checkpoint_to_state(self, run: Envelope, data: dict[str, Any]) -> None:
        """Mirror the active run's checkpoint into ``worker_states`` (the seed's
        ``write_checkpoint``); the node's own checkpoint record is what the next attempt reads."""
        active = self.active
        if active is None or (active.task_id, active.node_id) != (run.task_id, run.node_id):
            return
        try:
            await self.state.write_checkpoint(data)
        except Exception as exc:
            log.warning(
                "task %s node %s: could not mirror the checkpoint (%s)", run.task_id, run.node_id, exc
            )

    @staticmethod
    def _stopped_while_queued(message: Envelope, state: State | None) -> bool:
        """A cancel (or upstream failure) that came before the run started found no run
        to signal; the node's state in the store still says so."""
        if state == State.CANCELLING or (state is not None and state.terminal):
            log.info(
                "task %s node %s: %s before it started, not run", message.task_id, message.node_id, state
            )
            return True
        return False

    def _context(self, message: Envelope, cmd: RunCommand, checkpoint: dict[str, Any] | None) -> RunContext:
        writer = ArtifactsWriter(
            self.store,
            message.task_id,
            message.node_id,
            lambda: self._publish(message, Kind.ARTIFACT),
            first_attempt=message.attempt == 1,
        )
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
            on_checkpoint=lambda data: self._checkpoint_to_state(message, data),
        )

    def _feed(self, ctx: RunContext) -> ArtifactFeed:
        return ArtifactFeed(self.store, ctx.task_id, self.cfg.pull_poll_ms_default, ctx.cancel_flag)

    # -- reporting -----------------------------------------------------------------

    def _report_accepted(self, run: Envelope, active: _ActiveRun) -> None:
        active.accepted_sent = True
        active.send_behind(self._publish(run, Kind.ACCEPTED))

    async def _report_batches(self, run: Envelope, batches: list[tuple[str, dict[str, float]]]) -> None:
        """One report of the batches a group write recorded, sent behind: the records are
        in the store already (the truth), and sends of one task keep their order (one
        partition), so the outcome still comes last."""
        send = self._publish(
            run,
            Kind.BATCH_DONE,
            {"batches": _batch_list(batches)},
            dedup=f"{run.task_id}:{run.node_id}:batch:{batches[0][0]}:{len(batches)}",
        )
        active = self._active.get((run.task_id, run.node_id))
        if active is None:
            await send
        else:
            active.send_behind(send)

    async def _report_outcome(self, run: Envelope, outcome: Outcome) -> None:
        if outcome.state == "finished":
            payload: dict[str, Any] = {"metrics": outcome.metrics, "batches": outcome.batches}
            if outcome.ending:  # stored with the outcome: reported with it
                payload["batches_done"] = _batch_list([(b.batch_uid, b.metrics) for b in outcome.ending])
            await self._report(run, "finished", Kind.FINISHED, payload, tuple(outcome.ending))
        elif outcome.state == "cancelled":
            await self._report(run, "cancelled", Kind.CANCELLED, {})
        else:
            assert outcome.error is not None
            await self._report(run, "failed", Kind.FAILED, outcome.error.model_dump())

    async def _report(
        self,
        run: Envelope,
        state: RunState,
        kind: Kind,
        payload: dict[str, Any],
        batches: tuple[CountedBatch, ...] = (),
    ) -> None:
        """The outcome goes to the store first (the truth), then to the coordinator, after
        the run's other reports; if it was not reported accepted, with its start."""
        active = self._active.get((run.task_id, run.node_id))
        if active is not None and active.sends:
            await asyncio.gather(*active.sends, return_exceptions=True)
        if active is not None and not active.accepted_sent:
            payload = {**payload, "started_at": active.started_at}
        error = None
        if kind == Kind.FAILED:
            error = NodeError.model_validate(payload)
        end = RunEnd(
            run.task_id,
            run.node_id,
            run.attempt,
            self.worker_id,
            state,
            time.time(),
            payload.get("metrics"),
            error,
            batches,
        )
        ended = await self._ends(end)
        if not ended:
            log.info(
                "task %s node %s attempt %d: no longer ours (lease lapsed); outcome %s not reported",
                run.task_id,
                run.node_id,
                run.attempt,
                state,
            )
            return
        await self._publish(run, kind, payload)

    def _status(
        self, task_id: str, node_id: str, attempt: int, kind: Kind, payload: dict[str, Any], dedup: str = ""
    ) -> Envelope:
        return Envelope(
            kind=kind,
            task_id=task_id,
            node_id=node_id,
            attempt=attempt,
            worker_id=self.worker_id,
            payload=payload,
            dedup_key=dedup or f"{task_id}:{node_id}:{attempt}:{kind.value}",
        )

    async def _publish(
        self, run: Envelope, kind: Kind, payload: dict[str, Any] | None = None, dedup: str = ""
    ) -> None:
        messages = [self._status(run.task_id, run.node_id, run.attempt, kind, payload or {}, dedup)]
        active = self._active.get((run.task_id, run.node_id))
        if kind in _PROGRESS and active is not None and not active.accepted_sent:
            # Progress before ACCEPTED_AFTER_SEC: it started, said first (in order).
            active.accepted_sent = True
            if active.accept_timer is not None:
                active.accept_timer.cancel()
            messages.insert(0, self._status(run.task_id, run.node_id, run.attempt, Kind.ACCEPTED, {}))
        try:
            async with asyncio.timeout(STATUS_SEND_TIMEOUT_SEC):
                await self.bus.publish_many([(STATUS_TOPIC, m) for m in messages])
        except Exception as exc:  # never the handler's failure: the fact is in the store already
            log.warning(
                "task %s node %s: could not send %s (%s); the coordinator reconciles from the store",
                run.task_id,
                run.node_id,
                kind.value,
                exc,
            )


def _batch_list(batches: list[tuple[str, dict[str, float]]]) -> list[dict[str, Any]]:
    return [{"batch_uid": uid, "metrics": metrics} for uid, metrics in batches]


def _attempt_key(message: Envelope) -> Attempt:
    return message.task_id, message.node_id, message.attempt


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel a read no longer needed, and let its outcome go unreported."""
    future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
