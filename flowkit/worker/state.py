"""The worker's state in the database (the seed Worker guide's ``DatabaseWorkerState``).

One document per worker in ``worker_states``: its roles, capacity, how busy it is, its
last heartbeat, and the run it is working on with that run's checkpoint. A worker that
restarts with the same ``worker_id`` (a StatefulSet pod, a systemd unit) reads its
active run back and hands it to the coordinator at once, instead of letting the
attempt's lease run out; the next attempt resumes from the checkpoint.

>>> active_run = await worker.state.read_active()
>>> if active_run:
...     print(f"Recovering task: {active_run.task_id}")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..store.base import Store

log = logging.getLogger("flowkit.worker")

MIN_WRITE_INTERVAL_SEC = 0.2
"""The active-run mirror writes at most this often."""
_NOTHING = object()


@dataclass
class ActiveRun:
    """The attempt a worker is running (its oldest, when it runs several)."""

    task_id: str
    node_id: str
    attempt: int
    role: str = ""
    started_at: float = field(default_factory=time.time)
    checkpoint: dict[str, Any] | None = None


class DatabaseWorkerState:
    """Database-backed worker state: ``read_active``, ``write_active``, ``write_checkpoint``."""

    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.worker_id = worker_id
        # One write at a time: a MongoDB-protocol server may apply updates of one document
        # as read-modify-write (FerretDB does), and heartbeats and runs write this one.
        self._writing = asyncio.Lock()

    async def read_active(self) -> ActiveRun | None:
        doc = await self.store.get_worker_state(self.worker_id)
        active = (doc or {}).get("active_run")
        if not active:
            return None
        known = {k: v for k, v in active.items() if k in ActiveRun.__dataclass_fields__}
        return ActiveRun(**known)

    async def write_active(self, active_run: ActiveRun | None) -> None:
        async with self._writing:
            await self.store.set_worker_state(
                self.worker_id,
                {"active_run": asdict(active_run) if active_run else None},
            )

    async def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        async with self._writing:
            await self.store.set_worker_state(self.worker_id, {"active_run.checkpoint": dict(checkpoint)})

    async def write_presence(self, fields: dict[str, Any]) -> None:
        """Roles, capacity, busy, status and last heartbeat, for ``flowkit workers``."""
        async with self._writing:
            await self.store.set_worker_state(self.worker_id, fields)


class ActiveRunMirror:
    """Keeps ``worker_states.active_run`` in step with the worker's oldest run, off the
    runs' critical path: a change only marks the mirror stale, and one background task
    writes the newest value (values it never got to are skipped, not queued). The run
    records are the truth for recovery (leases); this mirror is what a restarted worker
    hands back at once, and what people read."""

    def __init__(self, state: DatabaseWorkerState, current: Callable[[], ActiveRun | None]) -> None:
        self._state = state
        self._current = current
        self._stale = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.min_interval_sec = MIN_WRITE_INTERVAL_SEC

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name=f"{self._state.worker_id}:active-run")

    def changed(self) -> None:
        self._stale.set()
        self._idle.clear()

    async def stop(self, timeout: float) -> None:
        """Write what is pending (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _write_forever(self) -> None:
        written: object = _NOTHING
        while True:
            await self._stale.wait()
            self._stale.clear()
            current = self._current()
            if current != written:
                try:
                    await self._state.write_active(current)
                    written = current
                except Exception as exc:  # the next change writes again; the run records hold the truth
                    log.warning("worker %s: could not write its active run (%s)", self._state.worker_id, exc)
                # Paced: runs shorter than this coalesce (a chain of quick nodes wrote
                # twice per node), and the run records hold the truth meanwhile.
                await asyncio.sleep(self.min_interval_sec)
            if not self._stale.is_set():
                self._idle.set()
