"""Write-behind: a task's state changes are written in one update per flush, then its messages sent.

Scheduling decisions are made in memory and cost microseconds; the store and the bus
cost milliseconds. So decisions never wait for I/O: they queue their writes and
messages on the task (:class:`~flowkit.coordinator.taskrun.TaskRun`), and one flusher
writes every dirty task (one fenced write each, one task after the other) and then
sends their messages. What piles up during a flush goes in the next one, so the busier
the coordinator, the bigger and fewer its round trips.

Run commands are the one exception to "state first": they go out as soon as they are
decided, without waiting for this flush's write or an earlier one still under way, which
takes the store off every dispatch's critical path. That is safe because a dispatch is
a pure function of durable facts: the run records that workers write before they report
(:mod:`.intake`) and the task's stored state. A coordinator that crashed (or lost the
task) before its write landed is followed by one that rebuilds the same decision, with
the same attempt number, and the attempt's run record (claimed once, by one worker)
makes the two commands one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..bus.base import Bus
from ..errors import LeaseLost, TaskNotFound
from ..store.base import Store
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")

RETRY_DELAY_SEC = 0.5
LATE_WRITE_SEC = 0.25
"""A node's changes that the workers' records already hold (it started, its batch
counts, metrics and first batch) wait up to this long, or until the node has a change
that may not wait (its outcome, a dispatch), and go with it: a streaming node reports
every batch, and a fan-out's node starts and ends within milliseconds, so one write per
node instead of two or three (the coordinator's largest load on the store). Nothing is
lost by waiting: an adopting coordinator rebuilds those from the run and batch records.
Outcomes, dispatches, messages and the task's end are written at once."""


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
        self._commanding: set[TaskRun] = set()
        self._command_wake = asyncio.Event()
        self._sending: asyncio.Future[list[None]] | None = None
        self._deferred: set[TaskRun] = set()
        self._draining = False

    def mark(self, run: TaskRun) -> None:
        self._dirty.add(run)
        self._idle.clear()
        self._wake.set()
        self._commanding.add(run)
        self._command_wake.set()

    async def run_forever(self) -> None:
        """Two loops: state writes (one flush of each dirty task at a time) and, beside
        them, run commands, which never wait for a write."""
        await asyncio.gather(self._write_forever(), self._send_commands_forever())

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            # One task's flush at a time: a coordinator's writes do not contend with each
            # other (on FerretDB's SQLite, concurrent writers wait on each other's locks:
            # 20 tasks x 20 nodes ran at 9.4 nodes/s so, 5.0 with all flushes at once),
            # and what piles up meanwhile goes into the next, bigger flush.
            for run in dirty:
                wait = self._late_wait(run)
                if wait > 0:
                    self._defer(run, wait)
                    continue
                await self._flush(run)
            if not self._dirty and not self._deferred:
                self._idle.set()

    def _late_wait(self, run: TaskRun) -> float:
        """How long the run's changes may wait: >0 only for changes that may (see
        ``LATE_WRITE_SEC``) of a task written recently."""
        if self._draining or run.urgent or run.task_fields or run.outbox or run.after_flush or run.ended:
            return 0.0
        return self._waited_left(run)

    @staticmethod
    def _waited_left(run: TaskRun) -> float:
        """How much longer the oldest waiting change may wait (0: not any more, or none)."""
        if run.waiting_since is None:
            return 0.0
        return max(0.0, run.waiting_since + LATE_WRITE_SEC - time.monotonic())

    def _defer(self, run: TaskRun, wait: float) -> None:
        if run not in self._deferred:
            self._deferred.add(run)
            asyncio.get_running_loop().call_later(wait, self._undefer, run)

    def _undefer(self, run: TaskRun) -> None:
        self._deferred.discard(run)
        self.mark(run)

    async def _send_commands_forever(self) -> None:
        while True:
            await self._command_wake.wait()
            self._command_wake.clear()
            runs, self._commanding = self._commanding, set()
            sending = asyncio.gather(*(self._send_commands(run) for run in runs))
            self._sending = sending
            await sending

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued so far is flushed (clean stop), what may wait too."""
        self._draining = True
        for run in list(self._deferred):
            self._undefer(run)
        async with asyncio.timeout(timeout):
            await self._idle.wait()
            if self._sending is not None:
                await self._sending

    async def flush(self, run: TaskRun) -> None:
        """Write and send what ``run`` has queued now (API calls that return a state)."""
        await self._flush(run, everything=True)

    async def _flush(self, run: TaskRun, everything: bool = False) -> None:
        await self._send_commands(run)  # those the command loop has not taken yet
        async with run.flush_lock:  # one flush of a task at a time, so its writes stay in order
            everything = everything or self._draining or run.ended or self._waited_left(run) == 0
            await self._flush_unlocked(run, everything)
        if run.node_fields and not everything:  # changes that wait: written when their time is up
            self._defer(run, self._waited_left(run))

    async def _flush_unlocked(self, run: TaskRun, everything: bool) -> None:
        effects, run.after_flush = run.after_flush, []
        task_fields, node_fields, outbox = run.take_unflushed(everything=everything)
        try:
            if task_fields or node_fields:
                await self.store.write_task(run.task_id, task_fields, node_fields, fence=run.fence)
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

    async def _send_commands(self, run: TaskRun) -> None:
        """Send the run commands ``run`` has queued; a failed send is queued again."""
        commands = run.take_commands()
        if not commands:
            return
        try:
            await self.bus.publish_many(commands)
        except Exception as exc:
            log.warning("task %s: could not send %d commands (%s); retrying", run.task_id, len(commands), exc)
            run.put_back({}, {}, commands)
            self._retry_later(run)

    def _retry_later(self, run: TaskRun) -> None:
        asyncio.get_running_loop().call_later(RETRY_DELAY_SEC, self.mark, run)
