"""FlowWorkerPools: each owns a Deployment of `flowkit worker` (see :mod:`.pool_spec`),
applied with server-side apply on create, resume and every spec change; the pool's status
follows the Deployment and its pods (debounced per pool), and a pool that turns
unhealthy (e.g. handlers that cannot be imported) gets a Warning Event saying why."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from .config import OperatorConfig
from .events import Events
from .kube import GROUP, MERGE_PATCH, POOLS, VERSION, ObjectRef, apps_api, core_api, custom_api, is_not_found
from .pool_spec import POOL_LABEL, deployment, deployment_name
from .pool_status import PROBLEM_REASONS, READY, pool_status
from .status_view import rfc3339

log = logging.getLogger("flowkit_operator.pools")

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "flowkit-operator"
DEBOUNCE_SEC = 0.5


@dataclass
class _PoolState:
    reason: str | None = None
    ready_since: str | None = None
    ready: bool | None = None
    refresh: asyncio.Task[None] | None = None
    again: bool = False


class Pools:
    def __init__(self, cfg: OperatorConfig, api: Any, events: Events) -> None:
        self._cfg = cfg
        self._apps = apps_api(api)
        self._core = core_api(api)
        self._custom = custom_api(api)
        self._events = events
        self._pools: dict[tuple[str, str], _PoolState] = {}

    async def apply(self, body: Any, *, created: bool) -> None:
        """Create or update the pool's Deployment to match its spec."""
        manifest = deployment(body, self._cfg)
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        await self._apps.patch_namespaced_deployment(
            name, ns, manifest, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH
        )
        ref = ObjectRef.of(body)
        if created:
            replicas = manifest["spec"]["replicas"]
            self._events.normal(ref, "DeploymentCreated", f"Deployment {name} with {replicas} workers")
        self.changed(ref.namespace, ref.name)

    def changed(self, namespace: str, pool: str) -> None:
        """The pool, its Deployment or one of its pods changed: refresh the status soon."""
        state = self._pools.setdefault((namespace, pool), _PoolState())
        if state.refresh is not None and not state.refresh.done():
            state.again = True
            return
        state.refresh = asyncio.create_task(self._refresh(namespace, pool, state), name=f"pool-{pool}")

    def forget(self, namespace: str, pool: str) -> None:
        state = self._pools.pop((namespace, pool), None)
        if state is not None and state.refresh is not None:
            state.refresh.cancel()

    async def _refresh(self, namespace: str, pool: str, state: _PoolState) -> None:
        while True:
            await asyncio.sleep(DEBOUNCE_SEC)  # coalesces a burst of pod events into one read
            state.again = False
            try:
                await self._write_status(namespace, pool, state)
            except Exception as exc:
                log.warning("pool %s/%s: status not written (%s)", namespace, pool, exc)
                state.again = True
            if not state.again:
                return

    async def _write_status(self, namespace: str, pool_name: str, state: _PoolState) -> None:
        try:
            pool = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, POOLS, pool_name
            )
        except client.ApiException as exc:
            if is_not_found(exc):
                self._pools.pop((namespace, pool_name), None)
                return
            raise
        try:
            found = await self._apps.read_namespaced_deployment(deployment_name(pool_name), namespace)
            dep = self._apps.api_client.sanitize_for_serialization(found)
        except client.ApiException as exc:
            if not is_not_found(exc):
                raise
            dep = None
        pods = await self._pods(namespace, pool_name)
        status, ready = pool_status(pool, dep, pods)
        now = rfc3339(time.time())
        if ready != state.ready:
            state.ready_since = now
        status["conditions"] = [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": status["reason"],
                "message": status["message"],
                "lastTransitionTime": state.ready_since or now,
            }
        ]
        await self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, POOLS, pool_name, {"status": status}, _content_type=MERGE_PATCH
        )
        ref = ObjectRef.of(pool)
        if status["reason"] != state.reason:
            if status["reason"] in PROBLEM_REASONS:
                self._events.warning(ref, status["reason"], status["message"])
            elif status["reason"] == READY and state.reason is not None:
                self._events.normal(ref, READY, status["message"])
        state.reason, state.ready = status["reason"], ready

    async def _pods(self, namespace: str, pool: str) -> list[Any]:
        api = self._core.api_client
        found = await self._core.list_namespaced_pod(namespace, label_selector=f"{POOL_LABEL}={pool}")
        return [api.sanitize_for_serialization(p) for p in found.items]
