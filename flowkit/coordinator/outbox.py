"""Write-behind: a task's state changes are written in one update per flush, then its messages sent.

Scheduling decisions are made in memory and cost microseconds; the store and the bus
cost milliseconds. So decisions never wait for I/O: they queue their writes and
messages on the task (:class:`~flowkit.coordinator.taskrun.TaskRun`), and one flusher
writes every dirty task (one fenced single-document update each, all tasks at once)
and then sends all their messages in one batch. What piles up during a flush goes in
the next one, so the busier the coordinator, the bigger and fewer its round trips.

Run commands are the one exception to "state first": they go out while the state is
being written, which takes a store round trip off every dispatch. That is safe because
a dispatch is a pure function of the stored state: a coordinator that crashed (or lost
the task) before its write landed is followed by one that rebuilds the same decision,
with the same attempt number, and the attempt's run record (claimed once, by one
worker) makes the two commands one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..bus.base import Bus
from ..errors import LeaseLost, TaskNotFound
from ..protocol import Envelope, Kind
from ..store.base import Store
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")

RETRY_DELAY_SEC = 0.5


class Outbox:
    """Flushes dirty tasks; a task whose fence is stale (or that was deleted) is dropped."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        on_lost: Callable[[TaskRun, str], None],
        on_done: Callable[[TaskRun], None],
    ) -> None:
        self.store = store
        self.bus = bus
        self._on_lost = on_lost
        self._on_done = on_done
        self._dirty: set[TaskRun] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def mark(self, run: TaskRun) -> None:
        self._dirty.add(run)
        self._idle.clear()
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            await asyncio.gather(*(self._flush(run) for run in dirty))
            if not self._dirty:
                self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued so far is flushed (clean stop)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def flush(self, run: TaskRun) -> None:
        """Write and send what ``run`` has queued now (API calls that return a state)."""
        await self._flush(run)

    async def _flush(self, run: TaskRun) -> None:
        async with run.flush_lock:  # one flush of a task at a time, so its writes stay in order
            await self._flush_unlocked(run)

    async def _flush_unlocked(self, run: TaskRun) -> None:
        effects, run.after_flush = run.after_flush, []
        task_fields, node_fields, outbox = run.take_unflushed()
        commands = [item for item in outbox if item[1].kind == Kind.RUN]
        if commands:
            outbox = [item for item in outbox if item[1].kind != Kind.RUN]
        try:
            writing = (
                self.store.write_task(run.task_id, task_fields, node_fields, fence=run.fence)
                if task_fields or node_fields
                else None
            )
            if commands:
                await self._send_commands(run, commands, writing)
            elif writing is not None:
                await writing
        except (LeaseLost, TaskNotFound) as exc:
            self._on_lost(run, str(exc))
            return
        except Exception as exc:
            log.warning("task %s: could not write its state (%s); retrying", run.task_id, exc)
            run.put_back(task_fields, node_fields, outbox)
            run.after_flush[:0] = effects
            self._retry_later(run)
            return
        for effect in effects:
            effect()
        try:
            if outbox:
                await self.bus.publish_many(outbox)
        except Exception as exc:
            log.warning("task %s: could not send %d messages (%s); retrying", run.task_id, len(outbox), exc)
            run.put_back({}, {}, outbox)
            self._retry_later(run)
            return
        if run.ended and not run.unflushed:
            run.done.set()
            self._on_done(run)

    async def _send_commands(
        self, run: TaskRun, commands: list[tuple[str, Envelope]], writing: Awaitable[None] | None
    ) -> None:
        """Send ``commands`` while ``writing`` runs; a failed send is queued for the next flush."""
        sending = asyncio.ensure_future(self.bus.publish_many(commands))
        try:
            if writing is not None:
                await writing
        finally:
            try:
                await sending
            except Exception as exc:
                log.warning(
                    "task %s: could not send %d commands (%s); retrying", run.task_id, len(commands), exc
                )
                run.put_back({}, {}, commands)
                self._retry_later(run)

    def _retry_later(self, run: TaskRun) -> None:
        asyncio.get_running_loop().call_later(RETRY_DELAY_SEC, self.mark, run)
