"""Running one task embedded, for the command: follow its status, stop it on Ctrl-C or timeout.

Ctrl-C cancels the task cooperatively (handlers see ``ctx.cancel_flag``) and waits up
to ``CANCEL_GRACE_SEC`` for them to stop; a second Ctrl-C stops waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..coordinator.core import Coordinator
from ..embedded import LocalRuntime
from ..graph import GraphSpec
from ..states import TaskStatus
from ..worker.handlers.base import Handler

log = logging.getLogger("flowkit.cli")

CANCEL_GRACE_SEC = 10.0
WATCH_INTERVAL_SEC = 0.05

StatusCallback = Callable[[TaskStatus], None]


@dataclass(frozen=True)
class RunOutcome:
    """The final status, and whether the run was cut short (Ctrl-C or ``timeout``)."""

    status: TaskStatus
    interrupted: bool = False
    timed_out: bool = False


async def run_task(
    graph: GraphSpec,
    handlers: Mapping[str, Handler],
    params: dict[str, Any],
    *,
    concurrency: int,
    timeout: float | None,
    on_status: StatusCallback,
) -> RunOutcome:
    """Run ``graph`` on a LocalRuntime; ``on_status`` gets every status change, the final one last."""
    async with LocalRuntime(handlers, concurrency=concurrency) as runtime:
        coordinator = runtime.coordinator
        task_id = await runtime.submit(graph, params)
        stop = asyncio.Event()
        follower = asyncio.create_task(_follow(coordinator, task_id, on_status))
        with sigint_sets(stop):
            ended = asyncio.create_task(coordinator.wait_task(task_id))
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({ended, stopped}, timeout=timeout, return_when="FIRST_COMPLETED")
            stopped.cancel()
            interrupted = stopped in done and ended not in done
            timed_out = not done
            if interrupted or timed_out:
                reason = "interrupted (Ctrl-C)" if interrupted else f"timed out after {timeout}s"
                stop.clear()
                log.warning("%s: cancelling task %s", reason, task_id)
                await _cancel_and_wait(coordinator, task_id, reason, ended, stop)
            else:
                await ended
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        status = await coordinator.get_status(task_id)
    on_status(status)
    return RunOutcome(status=status, interrupted=interrupted, timed_out=timed_out)


async def _follow(coordinator: Coordinator, task_id: str, on_status: StatusCallback) -> None:
    async for status in coordinator.watch(task_id, interval=WATCH_INTERVAL_SEC):
        on_status(status)


async def _cancel_and_wait(
    coordinator: Coordinator, task_id: str, reason: str, ended: asyncio.Task[TaskStatus], force: asyncio.Event
) -> None:
    """Cancel cooperatively; stop waiting after the grace period or a second Ctrl-C."""
    log.warning("task %s: %s, cancelling (Ctrl-C again to stop waiting)", task_id, reason)
    await coordinator.cancel_task(task_id, reason=reason)
    forced = asyncio.create_task(force.wait())
    done, _ = await asyncio.wait({ended, forced}, timeout=CANCEL_GRACE_SEC, return_when="FIRST_COMPLETED")
    forced.cancel()
    if ended not in done:
        ended.cancel()
        log.warning("task %s: handlers did not stop in time; leaving them", task_id)


@contextlib.contextmanager
def sigint_sets(event: asyncio.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``event`` instead of raising KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, event.set)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, threads)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
