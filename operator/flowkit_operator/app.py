"""The operator process: the coordinator, the status mirror, the sweep, the probes and
kopf, started in order and stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

POLL_FALLBACK_SEC = 1.0


def kopf_settings() -> Any:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # our own Events tell the story (events.py)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flowkit.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="flowkit.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    return settings


async def run(cfg: OperatorConfig, stop_flag: Any = None, ready: asyncio.Event | None = None) -> None:
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
        if unsubscribe is None:
            log.warning(
                "this engine has no Coordinator.on_change: polling task status every %.1fs", POLL_FALLBACK_SEC
            )
            background.append(asyncio.create_task(mirror.poll_forever(POLL_FALLBACK_SEC), name="status-poll"))
        sweep = Sweep(engine, api, cfg.namespaces, flowtasks.gone)
        background.append(asyncio.create_task(sweep.forever(cfg.sweep_interval_sec), name="sweep"))

        async def alive() -> str | None:
            return host.alive()

        async def readiness() -> str | None:
            if not kopf_ready.is_set():
                return "kopf is not running yet"
            return host.alive() or await host.reachable()

        health = HealthServer(cfg.health_port, alive, readiness)
        await health.start()
        registry = kopf.OperatorRegistry()
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
            if unsubscribe is not None:
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
