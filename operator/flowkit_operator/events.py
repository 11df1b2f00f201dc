"""Kubernetes Events on FlowTasks and pools, so `kubectl describe` tells the story.

Events are best effort: posting one never blocks or fails the caller (a refused Event
is logged). They are core/v1 Events, the kind `kubectl describe` lists.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .kube import ObjectRef, core_api
from .status_view import rfc3339

log = logging.getLogger("flowkit_operator.events")

COMPONENT = "flowkit-operator"
NORMAL, WARNING = "Normal", "Warning"


class Events:
    """Posts Events through one API client; :meth:`post` returns at once."""

    def __init__(self, api: Any) -> None:
        self._core = core_api(api)
        self._pending: set[asyncio.Task[None]] = set()
        self._instance = os.environ.get("HOSTNAME", COMPONENT)

    def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        log.info("%s %s/%s: %s %s", ref.kind, ref.namespace, ref.name, reason, message)
        task = asyncio.create_task(self.emit(ref, type_, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.post(ref, NORMAL, reason, message)

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.post(ref, WARNING, reason, message)

    async def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = rfc3339(time.time())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": ref.as_involved_object(),
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._core.create_namespaced_event(ref.namespace, body)
        except Exception as exc:
            log.warning("could not post Event %s on %s/%s: %s", reason, ref.namespace, ref.name, exc)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for Events still being posted, e.g. before shutting down."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
