"""kopf handlers for FlowTasks: thin, each hands the body to :class:`.flowtasks.FlowTasks`.

No finalizer (docs/operator.md, "Deletion"): the deletion is seen as the watch's DELETED
event, and what that misses the sweep catches.
"""

from __future__ import annotations

from typing import Any

import kopf

from .flowtasks import FlowTasks
from .kube import FLOWTASKS, GROUP, VERSION

BACKOFF_SEC = 5.0


def register(registry: Any, flowtasks: FlowTasks) -> None:
    resource = (GROUP, VERSION, FLOWTASKS)

    @kopf.on.create(*resource, registry=registry, backoff=BACKOFF_SEC)
    async def created(body: Any, **_: Any) -> None:
        await flowtasks.reconcile(body, resumed=False)

    @kopf.on.resume(*resource, registry=registry, backoff=BACKOFF_SEC)
    async def resumed(body: Any, **_: Any) -> None:
        await flowtasks.reconcile(body, resumed=True)

    @kopf.on.update(*resource, registry=registry, backoff=BACKOFF_SEC)
    async def updated(body: Any, **_: Any) -> None:
        await flowtasks.reconcile(body, resumed=False)

    @kopf.on.update(*resource, field="spec.graph", registry=registry)
    async def graph_changed(body: Any, **_: Any) -> None:
        await flowtasks.graph_changed(body)

    @kopf.on.event(*resource, registry=registry)
    async def deleted(event: Any, **_: Any) -> None:
        if event.get("type") == "DELETED":
            await flowtasks.gone(str(event["object"]["metadata"]["uid"]))
