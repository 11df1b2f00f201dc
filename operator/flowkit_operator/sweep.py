"""The sweep: store tasks of FlowTasks that are gone are cancelled and deleted.

FlowTasks carry no finalizer (a finalizer hangs `kubectl delete` while the operator is
down), so a deletion the operator did not see (it was down, or the watch missed it) is
caught here: at start and every ``sweep_interval_sec``, every store task labelled as
ours whose FlowTask no longer exists (by uid) in a namespace we watch is removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .engine import Engine
from .flowtasks import NAMESPACE_LABEL
from .kube import FLOWTASKS, GROUP, MANAGED_BY, VERSION, custom_api

log = logging.getLogger("flowkit_operator.sweep")


class Sweep:
    def __init__(
        self, engine: Engine, api: Any, namespaces: Collection[str], gone: Callable[[str], Awaitable[None]]
    ) -> None:
        self._engine = engine
        self._custom = custom_api(api)
        self._namespaces = tuple(namespaces)
        self._gone = gone

    async def once(self) -> list[str]:
        """Remove what is orphaned now; return the task ids removed."""
        ours = [t for t in await self._engine.list_tasks() if _is_ours(t.labels)]
        candidates = {t.task_id: t.labels.get(NAMESPACE_LABEL, "") for t in ours}
        if self._namespaces:
            candidates = {uid: ns for uid, ns in candidates.items() if ns in self._namespaces}
        if not candidates:
            return []
        alive = await self._flowtask_uids()
        removed = []
        for task_id in candidates.keys() - alive:
            try:
                await self._gone(task_id)
                removed.append(task_id)
            except Exception as exc:
                log.warning("sweep: task %s not removed (%s)", task_id, exc)
        if removed:
            log.info("sweep: removed %d task(s) whose FlowTask is gone", len(removed))
        return removed

    async def _flowtask_uids(self) -> set[str]:
        if self._namespaces:
            pages = [
                await self._custom.list_namespaced_custom_object(GROUP, VERSION, ns, FLOWTASKS)
                for ns in self._namespaces
            ]
        else:
            pages = [await self._custom.list_cluster_custom_object(GROUP, VERSION, FLOWTASKS)]
        return {item["metadata"]["uid"] for page in pages for item in page.get("items", [])}

    async def forever(self, interval: float) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sweep failed (%s); next one in %.0fs", exc, interval)
            await asyncio.sleep(interval)


def _is_ours(labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())
