"""kopf handlers for FlowWorkerPools and the Deployments and pods they own (thin: see :mod:`.pools`)."""

from __future__ import annotations

from typing import Any

import kopf

from .kube import GROUP, POOLS, VERSION, ObjectRef
from .pool_spec import POOL_LABEL
from .pools import Pools

BACKOFF_SEC = 5.0


def register(registry: Any, pools: Pools) -> None:
    resource = (GROUP, VERSION, POOLS)

    @kopf.on.create(*resource, registry=registry, backoff=BACKOFF_SEC)
    async def created(body: Any, **_: Any) -> None:
        await pools.apply(body, created=True)

    @kopf.on.resume(*resource, registry=registry, backoff=BACKOFF_SEC)
    @kopf.on.update(*resource, registry=registry, backoff=BACKOFF_SEC)
    async def changed(body: Any, **_: Any) -> None:
        await pools.apply(body, created=False)

    @kopf.on.event(*resource, registry=registry)
    async def deleted(event: Any, **_: Any) -> None:
        if event.get("type") == "DELETED":
            ref = ObjectRef.of(event["object"])
            pools.forget(ref.namespace, ref.name)

    owned = {POOL_LABEL: kopf.PRESENT}

    @kopf.on.event("apps", "v1", "deployments", labels=owned, registry=registry)
    @kopf.on.event("", "v1", "pods", labels=owned, registry=registry)
    async def workload(event: Any, **_: Any) -> None:
        meta = event["object"]["metadata"]
        pools.changed(str(meta["namespace"]), str(meta["labels"][POOL_LABEL]))
