"""A worker's health over HTTP, for Kubernetes probes: ``flowkit worker --health-port N``.

``GET /healthz`` (liveness) answers 200 while the worker's event loop answers and its
background duties (heartbeats, announcements, cancel signals and polls) run: not whether
Kafka or MongoDB can be reached, so an outage of theirs restarts no worker (the duties
ride it out). ``GET /readyz`` (readiness) 200 while it takes work (started,
subscribed, not draining). Anything else is 503 with the reason, or 404. A few lines of
asyncio rather than a web framework: workers need no HTTP stack otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("flowkit.worker")

READ_TIMEOUT_SEC = 5.0


def liveness(worker: Worker) -> str | None:
    """None when alive; else what is wrong."""
    broken = worker.presence.broken_loop()
    return None if broken is None else f"background duty {broken} ended"


def readiness(worker: Worker) -> str | None:
    """None when the worker takes work; else why not."""
    if not worker.taking_work:
        return "draining" if worker.started_at is not None else "not started"
    return None


class HealthServer:
    def __init__(self, worker: Worker, port: int, host: str = "0.0.0.0") -> None:
        self.worker, self.port, self.host = worker, port, host
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self.host, self.port)
        log.info(
            "worker %s: health on http://%s:%d/healthz and /readyz",
            self.worker.worker_id,
            self.host,
            self.port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SEC):
                request = (await reader.readline()).decode("latin-1").split()
                while (await reader.readline()).strip():  # the headers: not needed
                    pass
            path = request[1] if len(request) >= 2 else ""
            if path == "/healthz":
                problem = liveness(self.worker)
            elif path == "/readyz":
                problem = readiness(self.worker)
            else:
                self._reply(writer, 404, "not found: /healthz or /readyz")
                return
            self._reply(writer, 200 if problem is None else 503, problem or "ok")
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, code: int, text: str) -> None:
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
        body = (text + "\n").encode()
        head = f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
