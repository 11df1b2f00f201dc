"""The engine's Coordinator inside the operator: started, stopped, asked whether it is well.

The operator schedules nothing itself: every FlowTask is a task of this coordinator
(MongoDB + Kafka from the engine's own settings), which shares the store with every other
coordinator and ``flowkit`` client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from flowkit.backends.connect import mongo_database, safe_url
from flowkit.coordinator.core import Coordinator

from .config import OperatorConfig

log = logging.getLogger("flowkit_operator.coordinator")

PROBE_TIMEOUT_SEC = 3.0


class CoordinatorHost:
    """Owns the MongoDB client and the coordinator of one operator process."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self._db: Any = None
        self._coordinator: Coordinator | None = None

    @property
    def coordinator(self) -> Coordinator:
        if self._coordinator is None:
            raise RuntimeError("the coordinator is not started")
        return self._coordinator

    @property
    def db(self) -> Any:
        return self._db

    async def start(self) -> None:
        if self._coordinator is not None:
            raise RuntimeError("the coordinator is already started")
        self._db = mongo_database(self.cfg.coordinator)
        coordinator = Coordinator(db=self._db, cfg=self.cfg.coordinator)
        try:
            await coordinator.start()
        except BaseException:
            await self._close_client()
            raise
        self._coordinator = coordinator
        log.info(
            "coordinator %s on %s and Kafka %s",
            coordinator.coordinator_id,
            safe_url(self.cfg.coordinator.mongo_url.get_secret_value()),
            self.cfg.coordinator.kafka_bootstrap,
        )

    async def stop(self) -> None:
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None:
            await coordinator.stop()
        await self._close_client()

    async def _close_client(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.client.close()
            self._db = None

    def on_change(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """``callback(task_id)`` after any write to a task by any process (the change feed)."""
        return self.coordinator.on_change(callback)

    # -- probes --------------------------------------------------------------------

    def alive(self) -> str | None:
        """None when the coordinator's loops run; else what is wrong."""
        coordinator = self._coordinator
        if coordinator is None:
            return "coordinator not started"
        broken = coordinator.broken_loop()
        return None if broken is None else f"coordinator loop {broken} ended"

    async def reachable(self) -> str | None:
        """None when MongoDB answers a ping and Kafka's bootstrap accepts a connection."""
        if self._db is None:
            return "coordinator not started"
        try:
            await asyncio.wait_for(self._db.command("ping"), PROBE_TIMEOUT_SEC)
        except Exception as exc:
            return f"MongoDB unreachable: {type(exc).__name__}: {exc}"
        problem = await _kafka_reachable(self.cfg.coordinator.kafka_bootstrap)
        return problem


async def _kafka_reachable(bootstrap: str) -> str | None:
    """A TCP connection to any one bootstrap server (the bus reconnects on its own)."""
    errors = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]") or "localhost", int(port or 9092)), PROBE_TIMEOUT_SEC
            )
        except (OSError, TimeoutError, ValueError) as exc:
            errors.append(f"{server}: {exc or type(exc).__name__}")
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return None
    return f"Kafka unreachable ({'; '.join(errors) or 'no bootstrap servers'})"
