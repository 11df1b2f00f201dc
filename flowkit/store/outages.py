"""Riding out a database outage: FlowKit's own store calls wait for MongoDB to come back.

A MongoDB restart or failover is an event of the infrastructure, not a reason to fail a
user's node or to drop a coordinator's decisions: a call that fails because the server
cannot be reached (pymongo's ``ConnectionFailure``: ``AutoReconnect``,
``NetworkTimeout``, ``ServerSelectionTimeoutError``), or that the server calls
retryable (the ``RetryableWriteError`` label; FerretDB's "database is locked" from its
SQLite backend under concurrent writers), is tried again with a growing pause for up
to ``patience_sec``, then raised. Every store write is safe to repeat (inserts
keyed by id, conditional updates), so a write that did reach the server before the
connection broke is not applied twice.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.errors import ConnectionFailure, OperationFailure

log = logging.getLogger("flowkit.store")

DEFAULT_PATIENCE_SEC = 120.0
_FIRST_PAUSE_SEC, _MAX_PAUSE_SEC = 0.2, 5.0


def is_transient(exc: BaseException) -> bool:
    """The database could not do it now but may in a moment."""
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, OperationFailure):
        return exc.has_error_label("RetryableWriteError") or "SQLITE_BUSY" in str(exc)
    return False


class OutageTolerantStore:
    """Wraps a store; its coroutine methods retry while the database is unreachable."""

    def __init__(self, store: Any, patience_sec: float = DEFAULT_PATIENCE_SEC) -> None:
        self._store = store
        self._patience = patience_sec

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._patient(attr)
        setattr(self, name, wrapped)  # once per method: later lookups skip __getattr__
        return wrapped

    def _patient(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(call)
        async def patient(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._patience
            pause = _FIRST_PAUSE_SEC
            while True:
                try:
                    return await call(*args, **kwargs)
                except (ConnectionFailure, OperationFailure) as exc:
                    if not is_transient(exc) or time.monotonic() + pause > deadline:
                        raise
                    log.warning(
                        "store: %s: database unreachable (%s); trying again in %.1fs",
                        call.__name__,
                        exc,
                        pause,
                    )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _MAX_PAUSE_SEC)

        return patient
