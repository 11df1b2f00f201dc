"""The FlowTask ``status`` kept current from the engine's change feed, debounced.

``changed(task_id)`` is the change feed's callback: it only marks the task dirty. One
drainer per dirty task reads the task (from the coordinator's memory when it holds it,
else from MongoDB) and patches the FlowTask's status at most once per
``interval`` seconds, so every change in between is coalesced into one patch; a patch
identical to the last one is not sent. Phase transitions and node failures become Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowkit.coordinator.core import Coordinator
from flowkit.errors import TaskNotFound
from flowkit.states import State, TaskStatus

from .events import Events
from .kube import ObjectRef, custom_api, patch_flowtask_status
from .status_view import (
    CANCELLED,
    FAILED,
    FINISHED_PHASES,
    SUCCEEDED,
    Facts,
    node_failure,
    task_status,
)

log = logging.getLogger("flowkit_operator.status")

RETRY_AFTER_ERROR_SEC = 2.0


@dataclass(eq=False)
class Tracked:
    """One FlowTask the mirror keeps current."""

    ref: ObjectRef
    facts: Facts
    last: dict[str, Any] = field(default_factory=dict)
    """The status as last written (or as found on the FlowTask)."""
    last_patch_at: float = 0.0
    dirty: bool = False
    drainer: asyncio.Task[None] | None = None
    reported: set[tuple[str, int]] = field(default_factory=set)
    """(node id, attempt) failures already told in an Event."""
    quiet: bool = False
    """First read after an operator restart: failures already told are not told again."""

    @property
    def task_id(self) -> str:
        return self.ref.uid

    @property
    def phase(self) -> str | None:
        value = self.last.get("phase")
        return str(value) if value else None


Listener = Callable[[Tracked, TaskStatus, str | None], None]
"""Called after each write with (tracked, the task, the phase before)."""


class StatusMirror:
    def __init__(
        self, coordinator: Coordinator, api: Any, events: Events, interval: float, listener: Listener
    ) -> None:
        self._coordinator = coordinator
        self._custom = custom_api(api)
        self._events = events
        self._interval = interval
        self._listener = listener
        self._tracked: dict[str, Tracked] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.patches = 0
        """Status patches sent (for tests and metrics)."""

    def get(self, task_id: str) -> Tracked | None:
        return self._tracked.get(task_id)

    def track(self, ref: ObjectRef, facts: Facts, found_status: dict[str, Any], *, quiet: bool) -> Tracked:
        """Start (or keep) mirroring the FlowTask ``ref`` whose task id is its uid."""
        self._loop = asyncio.get_running_loop()
        tracked = self._tracked.get(ref.uid)
        if tracked is None:
            tracked = Tracked(ref=ref, facts=facts, last=dict(found_status), quiet=quiet)
            self._tracked[ref.uid] = tracked
        else:
            tracked.facts = facts
        return tracked

    def untrack(self, task_id: str) -> None:
        tracked = self._tracked.pop(task_id, None)
        if tracked is not None and tracked.drainer is not None:
            tracked.drainer.cancel()

    def tracked_ids(self) -> list[str]:
        return list(self._tracked)

    def changed(self, task_id: str) -> None:
        """The change feed's callback (sync, never blocks): the task was written."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._mark(task_id)
        else:
            loop.call_soon_threadsafe(self._mark, task_id)

    def _mark(self, task_id: str) -> None:
        tracked = self._tracked.get(task_id)
        if tracked is None:
            return
        tracked.dirty = True
        if tracked.drainer is None or tracked.drainer.done():
            tracked.drainer = asyncio.create_task(self._drain(tracked), name=f"status-{task_id}")

    async def _drain(self, tracked: Tracked) -> None:
        loop = asyncio.get_running_loop()
        while tracked.dirty and self._tracked.get(tracked.task_id) is tracked:
            wait = tracked.last_patch_at + self._interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the debounce: changes meanwhile coalesce
            tracked.dirty = False
            try:
                await self._write(tracked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "FlowTask %s/%s: status not written (%s); retrying",
                    tracked.ref.namespace,
                    tracked.ref.name,
                    exc,
                )
                tracked.dirty = True
                await asyncio.sleep(RETRY_AFTER_ERROR_SEC)
            finally:
                tracked.last_patch_at = loop.time()

    async def _write(self, tracked: Tracked) -> None:
        try:
            task = await self._coordinator.get_status(tracked.task_id)
        except TaskNotFound:
            await self._patch(
                tracked, {"message": "the task is not in the store (deleted?)", "reason": "TaskMissing"}
            )
            return
        status = task_status(task, tracked.facts, tracked.last.get("conditions"), time.time())
        before = tracked.phase
        if _same(status, tracked.last):
            tracked.last = status
        else:
            await self._patch(tracked, _merge_patch(status, tracked.last))
            tracked.last = status
        self._tell(tracked, task, before)
        tracked.quiet = False
        self._listener(tracked, task, before)

    async def _patch(self, tracked: Tracked, status: dict[str, Any]) -> None:
        if await patch_flowtask_status(self._custom, tracked.ref, status):
            self.patches += 1
        else:  # the FlowTask is gone; its deletion is handled elsewhere
            self.untrack(tracked.task_id)

    def _tell(self, tracked: Tracked, task: TaskStatus, before: str | None) -> None:
        """Events: node failures not told yet, and the task's end."""
        for node in task.nodes.values():
            if node.error is None or node.status not in (State.FAILED, State.DEFERRED):
                continue
            key = (node.node_id, node.attempts)
            if key in tracked.reported:
                continue
            tracked.reported.add(key)
            if not tracked.quiet:
                retrying = ", retrying" if node.status == State.DEFERRED else ""
                detail = f": {node.error.message}" if node.error.message else ""
                text = node_failure(node, tracked.facts.max_attempts.get(node.node_id)) + retrying + detail
                self._events.warning(tracked.ref, "NodeFailed", text)
        phase = tracked.phase
        if phase == before or phase not in FINISHED_PHASES:
            return
        message = str(tracked.last.get("message", ""))
        if phase == SUCCEEDED:
            self._events.normal(tracked.ref, "Succeeded", message)
        elif phase == FAILED:
            self._events.warning(tracked.ref, "Failed", message)
        elif phase == CANCELLED:
            self._events.normal(tracked.ref, "Cancelled", message)

    async def stop(self) -> None:
        drainers = [t.drainer for t in self._tracked.values() if t.drainer is not None]
        for drainer in drainers:
            drainer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*drainers, return_exceptions=True)
        self._tracked.clear()


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items())


def _merge_patch(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from ``old`` to ``new``: keys that went away (a node that left the
    bounded list, a state no node is in any more) are set to null, which removes them."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        patch[key] = (
            _merge_patch(value, before) if isinstance(value, dict) and isinstance(before, dict) else value
        )
    for key in old:
        if key not in new and key != "conditions":
            patch[key] = None
    return patch
