"""The operator process: the coordinator, the status mirror, the sweep, the probes and
kopf, started in order and stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from . import flowtask_handlers, pool_handlers
from .config import OperatorConfig
from .coordinator_host import CoordinatorHost
from .engine import Engine
from .events import Events
from .flowtasks import FlowTasks
from .health import HealthServer
from .kube import api_client
from .pools import Pools
from .status_mirror import StatusMirror
from .sweep import Sweep
from .timers import Timers

log = logging.getLogger("flowkit_operator")


@dataclass
class Operator:
    """The parts of a running operator (for tests and diagnostics)."""

    host: CoordinatorHost
    engine: Engine
    mirror: StatusMirror
    flowtasks: FlowTasks
    pools: Pools
    sweep: Sweep
    health: HealthServer


def register_login(registry: Any) -> None:
    """In the cluster: the pod's ServiceAccount; elsewhere: $KUBECONFIG (as :func:`.kube.api_client`)."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def kopf_settings() -> Any:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # our own Events tell the story (events.py)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowkit.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowkit.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    return settings


async def run(
    cfg: OperatorConfig,
    stop_flag: Any = None,
    ready: asyncio.Event | None = None,
    on_started: Callable[[Operator], None] | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or SIGTERM/SIGINT in the main thread)."""
    api = await api_client()
    host = CoordinatorHost(cfg)
    kopf_ready = ready or asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        await host.start()
        engine, events, timers = Engine(host.coordinator), Events(api), Timers()
        flowtasks: FlowTasks | None = None

        def written(tracked: Any, task: Any, before: str | None) -> None:
            if flowtasks is not None:
                flowtasks.status_written(tracked, task, before)

        mirror = StatusMirror(host.coordinator, api, events, cfg.status_interval_sec, written)
        flowtasks = FlowTasks(engine, mirror, events, api, timers)
        pools = Pools(cfg, api, events)
        unsubscribe = engine.on_change(mirror.changed)
        sweep = Sweep(engine, api, cfg.namespaces, flowtasks.gone)
        background.append(asyncio.create_task(sweep.forever(cfg.sweep_interval_sec), name="sweep"))

        async def alive() -> str | None:
            return host.alive()

        async def readiness() -> str | None:
            if not kopf_ready.is_set():
                return "kopf is not running yet"
            return host.alive() or await host.reachable()

        health = HealthServer(cfg.health_port, alive, readiness, cfg.health_host)
        await health.start()
        if on_started is not None:
            on_started(Operator(host, engine, mirror, flowtasks, pools, sweep, health))
        registry = kopf.OperatorRegistry()
        register_login(registry)
        flowtask_handlers.register(registry, flowtasks)
        pool_handlers.register(registry, pools)
        scope: dict[str, Any] = (
            {"namespaces": list(cfg.namespaces)} if cfg.namespaces else {"clusterwide": True}
        )
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(),
                standalone=True,
                stop_flag=stop_flag,
                ready_flag=kopf_ready,
                **scope,
            )
        finally:
            await health.stop()
            unsubscribe()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await mirror.stop()
            await timers.close()
            await events.flush()
    finally:
        with contextlib.suppress(Exception):
            await host.stop()
        await api.close()
        log.info("operator stopped")
