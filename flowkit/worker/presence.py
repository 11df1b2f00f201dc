"""A worker's background duties: heartbeats, announcements, and hearing about cancels.

Every loop here survives its own errors (a broker or database hiccup is logged and the
loop goes on at its next interval): a heartbeat loop that died silently would let every
lease of the worker lapse while it is still working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..bus.base import Subscription
from ..protocol import ANNOUNCE_TOPIC, SIGNALS_TOPIC, STATUS_TOPIC, Envelope, Kind
from ..states import State

if TYPE_CHECKING:
    from .runtime import Worker, _ActiveRun

log = logging.getLogger("flowkit.worker")

HEARTBEAT_SEND_TIMEOUT_SEC = 2.0
_STOPPED_IN_STORE = frozenset({State.CANCELLING, State.CANCELLED, State.FAILED, State.FINISHED})


class Presence:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.last_heartbeat_time: float | None = None
        self._signals: Subscription | None = None
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        w = self.worker
        self._signals = await w.bus.subscribe([SIGNALS_TOPIC], group=None)
        await self.announce("online")
        self._loops = [
            asyncio.create_task(self._take_signals(self._signals), name=f"{w.worker_id}:signals"),
            asyncio.create_task(self._every(w.cfg.hb_interval_sec, self.heartbeat), name=f"{w.worker_id}:hb"),
            asyncio.create_task(
                self._every(w.cfg.announce_interval_sec, lambda: self.announce("online")),
                name=f"{w.worker_id}:ann",
            ),
            asyncio.create_task(
                self._every(w.cfg.db_cancel_poll_ms / 1000, self.poll_cancellations),
                name=f"{w.worker_id}:poll",
            ),
        ]

    def broken_loop(self) -> str | None:
        """The name of a duty loop that ended (they run until stop), or None."""
        return next((loop.get_name() for loop in self._loops if loop.done()), None)

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        if self._signals is not None:
            with contextlib.suppress(Exception):
                await self._signals.close()
            self._signals = None
            with contextlib.suppress(Exception):
                await self.announce("offline")

    @staticmethod
    async def _every(interval: float, duty: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await duty()
            except Exception as exc:
                log.warning("worker duty %s failed (%s); trying again in %.1fs", duty, exc, interval)

    async def heartbeat(self) -> None:
        """Extend the lease of every running attempt (one store update) and tell the coordinators."""
        w = self.worker
        now = time.time()
        runs = w.active_runs
        if runs:
            async with w.run_writes:
                held = [(run.task_id, run.node_id, run.attempt) for run in runs]
                await w.store.renew_runs(w.worker_id, held, w.cfg.lease_ttl_sec, now)
            # Bounded: with the broker away, the next renewal in the store must not wait for it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    w.bus.publish_many([(STATUS_TOPIC, self._heartbeat(run)) for run in runs]),
                    HEARTBEAT_SEND_TIMEOUT_SEC,
                )
        self.last_heartbeat_time = now
        await w.state.write_presence({"busy": len(runs), "last_heartbeat": now, "status": "online"})

    def _heartbeat(self, run: _ActiveRun) -> Envelope:
        ctx = run.ctx
        return Envelope(
            kind=Kind.HEARTBEAT,
            task_id=ctx.task_id,
            node_id=ctx.node_id,
            attempt=ctx.attempt,
            worker_id=self.worker.worker_id,
            payload={"batches": ctx.processed_count},
        )

    async def announce(self, status: str) -> None:
        w = self.worker
        info: dict[str, Any] = {
            "worker_id": w.worker_id,
            "type": ",".join(w.cfg.roles),
            "capabilities": {"roles": list(w.cfg.roles)},
            "version": w.cfg.worker_version,
            "capacity": {"tasks": w.cfg.capacity},
            "status": status,
        }
        await w.state.write_presence(
            {
                "roles": list(w.cfg.roles),
                "capacity": w.cfg.capacity,
                "busy": len(w.active_runs),
                "status": status,
                "version": w.cfg.worker_version,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "last_heartbeat": time.time(),
            }
        )
        await w.bus.publish(ANNOUNCE_TOPIC, Envelope(kind=Kind.ANNOUNCE, worker_id=w.worker_id, payload=info))

    # -- cancellation: signals (fast) and the store (the second source, seed: "database flags") --

    async def _take_signals(self, sub: Subscription) -> None:
        async for delivery in sub:
            message = delivery.message
            if message.kind != Kind.CANCEL:
                continue
            run = self.worker._active.get((message.task_id, message.node_id))
            if run is not None and run.ctx.attempt == message.attempt:
                self.request_cancel(run, message.payload)

    async def poll_cancellations(self) -> None:
        """A signal missed while a run was starting, or sent while this worker was unreachable,
        still reaches the handler within ``db_cancel_poll_ms``. One read for all of them."""
        runs, store = self.worker.active_runs, self.worker.store
        if not runs:
            return
        states = await store.node_states([(run.ctx.task_id, run.ctx.node_id) for run in runs])
        for run, state in zip(runs, states, strict=True):
            if state in _STOPPED_IN_STORE and not run.job.done():
                # The task's cancel request says why, as the signal would have.
                reason = await store.cancel_request(run.ctx.task_id) or f"node is {state} in the store"
                self.request_cancel(run, {"reason": reason, "source": "db"})

    def request_cancel(self, run: _ActiveRun, meta: dict[str, Any]) -> None:
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
        asyncio.get_running_loop().call_later(self.worker.cfg.cancel_grace_sec, _interrupt, run)


def _interrupt(run: _ActiveRun) -> None:
    """The handler ignored the cancel flag past the grace period: interrupt it."""
    if not run.job.done():
        run.job.cancel()
