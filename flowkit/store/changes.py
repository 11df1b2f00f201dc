"""Telling readers in this process that a task changed: what both stores share.

Each task has a version, raised by every write of this store (``_bump``, which also
tells the change listener, the change feed) and by every :meth:`notice` of a write
another process made (heard through the feed). Waiters block on the version; observers
(the operator's status mirror) hear every change of every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .base import ChangeListener

log = logging.getLogger("flowkit.store")

ChangeObserver = Callable[[str], None]


class ChangeTracker:
    """Versions, waiters, the change listener and observers of a store."""

    def __init__(self) -> None:
        # Versions outlive a deleted task: a waiter never sees a re-created task "unchanged".
        self._versions: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._listener: ChangeListener | None = None
        self._observers: list[ChangeObserver] = []

    def version(self, task_id: str) -> int:
        """How many writes to the task this process made or was told of (:meth:`notice`)."""
        return self._versions.get(task_id, 0)

    def notice(self, task_id: str) -> None:
        """Another process changed the task: wake waiters (the listener is not called)."""
        self._wake(task_id)

    def set_change_listener(self, listener: ChangeListener | None) -> None:
        """``listener(task_id)`` after each write this store makes (the change feed)."""
        self._listener = listener

    def observe(self, observer: ChangeObserver) -> Callable[[], None]:
        """Call ``observer(task_id)`` after every change of any task, written here or
        noticed; returns the function that stops it. Observers must not block."""
        self._observers.append(observer)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return stop

    async def _wait_version(self, task_id: str, since: int, timeout: float) -> int:
        if self.version(task_id) == since:
            event = self._changed.setdefault(task_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return self.version(task_id)

    def _wake(self, task_id: str) -> None:
        self._versions[task_id] = self._versions.get(task_id, 0) + 1
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()
        for observer in self._observers:
            try:
                observer(task_id)
            except Exception:
                log.exception("task %s: a change observer failed", task_id)

    def _bump(self, task_id: str) -> None:
        """After a write of this store: wake waiters and observers, then tell the listener."""
        self._wake(task_id)
        if self._listener is not None:
            try:
                self._listener(task_id)
            except Exception:
                log.exception("task %s: the change listener failed", task_id)
