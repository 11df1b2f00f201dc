"""Probes on FLOWKIT_OPERATOR_HEALTH_PORT.

``/healthz`` (liveness): the coordinator's loops are alive; a dead loop means the process
should be restarted. ``/readyz`` (readiness): kopf is running and MongoDB and Kafka are
reachable right now. Both answer 200 "ok" or 503 with the reason in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

Check = Callable[[], Awaitable[str | None]]


class HealthServer:
    def __init__(self, port: int, alive: Check, ready: Check, host: str = "0.0.0.0") -> None:
        self._port, self._host = port, host
        self._alive, self._ready = alive, ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._probe(self._alive))
        app.router.add_get("/readyz", self._probe(self._ready))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    @staticmethod
    def _probe(check: Check) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            try:
                problem = await asyncio.wait_for(check(), 8.0)
            except Exception as exc:
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem is None:
                return web.Response(text="ok\n")
            return web.Response(status=503, text=problem + "\n")

        return handle

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
