"""Following a task another process runs, for ``flowkit submit --wait`` and ``flowkit watch``.

The follower reads the task again when the store says it changed: ``wait_changed``
returns as soon as the change feed tells this process of a write elsewhere, or after
``poll_sec``. A quiet interval is read too, since the feed is a hint, not the truth: a
lost notice costs one interval. Reads are at most every ``min_interval_sec``, so a busy
task does not turn into a busy loop.

Stopping the follower (Ctrl-C, ``timeout``) only stops *watching*: the task keeps running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..errors import TaskNotFound
from ..states import TaskStatus
from ..store.base import Store
from .session import RunOutcome, sigint_sets

POLL_SEC = 1.0
MIN_INTERVAL_SEC = 0.1

StatusCallback = Callable[[TaskStatus], None]


async def read_task(store: Store, task_id: str) -> TaskStatus:
    """The task's status; TaskNotFound if there is no such task."""
    status = await store.get_task(task_id)
    if status is None:
        raise TaskNotFound(task_id)
    return status


async def follow_task(
    store: Store,
    task_id: str,
    on_status: StatusCallback,
    *,
    poll_sec: float = POLL_SEC,
    min_interval_sec: float = MIN_INTERVAL_SEC,
) -> TaskStatus:
    """Call ``on_status`` with the task's status now and after every change; return the final one."""
    version = store.version(task_id)
    status = await read_task(store, task_id)
    on_status(status)
    read_at = time.monotonic()
    while not status.status.terminal:
        await store.wait_changed(task_id, version, timeout=poll_sec)
        pause = min_interval_sec - (time.monotonic() - read_at)
        if pause > 0:  # a display rate limit, not synchronisation
            await asyncio.sleep(pause)
        version = store.version(task_id)  # changes during the pause are in this read
        status = await read_task(store, task_id)
        read_at = time.monotonic()
        on_status(status)
    return status


async def watch_task(
    store: Store, task_id: str, on_status: StatusCallback, *, timeout: float | None = None
) -> RunOutcome:
    """:func:`follow_task` until the task ends, ``timeout`` passes or Ctrl-C (SIGINT)."""
    latest: list[TaskStatus] = []

    def remember(status: TaskStatus) -> None:
        latest[:] = [status]
        on_status(status)

    interrupt = asyncio.Event()
    with sigint_sets(interrupt):
        follower = asyncio.create_task(follow_task(store, task_id, remember))
        interrupted = asyncio.create_task(interrupt.wait())
        done, _ = await asyncio.wait(
            {follower, interrupted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for job in (follower, interrupted):
            job.cancel()
        await asyncio.gather(follower, interrupted, return_exceptions=True)
    if follower in done:
        return RunOutcome(follower.result())  # raises what the follower raised
    status = latest[0] if latest else await read_task(store, task_id)
    return RunOutcome(status, interrupted=interrupted in done, timed_out=not done)
