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
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..store.base import Store


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
