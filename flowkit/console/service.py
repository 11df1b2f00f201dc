"""``flowkit coordinator`` and ``flowkit worker``: one long-running process each, until a signal.

The first SIGTERM or SIGINT stops cleanly: a coordinator writes what it decided and
gives its tasks up (another adopts them at once); a worker drains (takes no new work,
lets running attempts finish for ``drain_timeout_sec``, hands the rest back). A second
signal stops at once: the worker hands its running attempts back without waiting, the
coordinator quits without flushing (its tasks are adopted when their leases run out).

Logs go to stderr, one line per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ..config import ConnectionSettings, CoordinatorConfig, WorkerConfig
from ..worker.handlers.base import Handler
from .connection import describe, open_database, reach_kafka, reach_mongo

log = logging.getLogger("flowkit.cli")

EXIT_CLEAN = 0
EXIT_FORCED = 1
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def log_to_stderr(verbose: bool) -> None:
    """FlowKit's loggers at INFO (DEBUG with ``verbose``), everyone else's warnings; one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("flowkit").setLevel(logging.DEBUG if verbose else logging.INFO)


@contextlib.contextmanager
def _driver_logs_muted() -> Iterator[None]:
    """While connecting, a broker that is not there is our one line, not aiokafka's per try."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class StopSignals:
    """Counts SIGTERM/SIGINT: ``first`` is set by the first, ``second`` by any later one."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self._received, sig)
        try:
            yield
        finally:
            for sig in self.SIGNALS:
                loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        if not self.first.is_set():
            log.info("%s: stopping (again to stop at once)", sig.name)
            self.first.set()
        else:
            log.warning("%s again: stopping at once", sig.name)
            self.second.set()


async def serve_coordinator(cfg: CoordinatorConfig) -> int:
    """Run a Coordinator until a signal; the exit code (Unreachable if a service is not there)."""
    from ..coordinator.core import Coordinator

    async def build(db: Any) -> Any:
        return Coordinator(db=db, cfg=cfg)

    async def stop_cleanly(coordinator: Any, signals: StopSignals) -> int:
        return EXIT_CLEAN if await _unless_second(coordinator.stop(), signals) else EXIT_FORCED

    return await _serve(cfg, f"coordinator {cfg.coordinator_id}", build, stop_cleanly)


async def serve_worker(cfg: WorkerConfig, handlers: dict[str, Handler]) -> int:
    """Run a Worker for ``cfg.roles`` until a signal; the exit code."""
    from ..worker.health import HealthServer
    from ..worker.runtime import Worker

    health: HealthServer | None = None

    async def build(db: Any) -> Any:
        nonlocal health
        worker = Worker(db=db, cfg=cfg, handlers=handlers)
        if cfg.health_port is not None:
            health = HealthServer(worker, cfg.health_port, cfg.health_host)
            await health.start()  # before connecting: a pod waiting for Kafka is alive, not ready
        return worker

    async def drain(worker: Any, signals: StopSignals) -> int:
        try:
            if not await _unless_second(worker.drain(), signals):
                running = len(worker.active_runs)
                log.warning("worker %s: handing back %d running attempt(s) now", cfg.worker_id, running)
                await worker.stop()
        finally:
            if health is not None:
                await health.stop()
        return EXIT_CLEAN

    return await _serve(cfg, f"worker {cfg.worker_id} (roles {', '.join(cfg.roles)})", build, drain)


async def _serve(
    cfg: ConnectionSettings,
    name: str,
    build: Callable[[Any], Awaitable[Any]],
    stop: Callable[[Any, StopSignals], Awaitable[int]],
) -> int:
    db = open_database(cfg)
    signals = StopSignals()
    try:
        with signals.installed():
            log.info("%s: connecting to %s", name, describe(cfg))
            service = await build(db)
            with _driver_logs_muted():
                await _until_first(reach_mongo(db, cfg), signals)
                # The service acquires its backends again on start(); holding them here turns
                # a broker that is not there into one clear line instead of a traceback.
                await _until_first(reach_kafka(service.backends, cfg), signals)
            try:
                await service.start()
                log.info("%s: running (SIGTERM or Ctrl-C stops it)", name)
                await signals.first.wait()
                return await stop(service, signals)
            finally:
                await service.backends.release()
    except _Stopped:
        log.info("%s: stopped while connecting", name)
        return EXIT_CLEAN
    finally:
        await db.client.close()


class _Stopped(Exception):
    """A signal came before the service had started."""


async def _until_first(step: Awaitable[None], signals: StopSignals) -> None:
    """Await ``step`` unless the first signal comes first (then raise _Stopped)."""
    job = asyncio.ensure_future(step)
    stopped = asyncio.create_task(signals.first.wait())
    await asyncio.wait({job, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not job.done():
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        raise _Stopped
    job.result()


async def _unless_second(step: Awaitable[None], signals: StopSignals) -> bool:
    """Await ``step``; False if a second signal cut it short (then it is cancelled)."""
    job = asyncio.ensure_future(step)
    forced = asyncio.create_task(signals.second.wait())
    await asyncio.wait({job, forced}, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if job.done():
        job.result()
        return True
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    return False
