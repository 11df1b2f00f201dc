"""One-shot timers by key (deadlines, TTLs): set again replaces, cancel forgets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("flowkit_operator.timers")


class Timers:
    def __init__(self) -> None:
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    def at(self, key: str, when: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action()`` at wall-clock time ``when`` (at once if it has passed)."""
        self.cancel(key)
        loop = asyncio.get_running_loop()
        self._handles[key] = loop.call_later(max(0.0, when - time.time()), self._fire, key, action)

    def pending(self, key: str) -> bool:
        return key in self._handles

    def cancel(self, key: str) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: str, action: Callable[[], Awaitable[None]]) -> None:
        self._handles.pop(key, None)
        task = asyncio.ensure_future(self._run(key, action))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _run(key: str, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except Exception:
            log.exception("timer %s failed", key)

    async def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
