"""Choosing the store and bus behind a Coordinator or Worker from what the user passed."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from .bus.base import Bus
from .bus.memory import MemoryBus
from .errors import ConfigError
from .store.base import Store
from .store.memory import MemoryStore

# Coordinators and workers created without a store or bus in the same event loop
# share one in-process pair: the embedded default.
_embedded: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[MemoryStore, MemoryBus]] = (
    weakref.WeakKeyDictionary()
)


def embedded_backends() -> tuple[MemoryStore, MemoryBus]:
    """The in-process store and bus shared by everything created in the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "without db=, store= or bus=, coordinators and workers share an in-process backend per "
            "event loop: create them inside `async def main()` run by asyncio.run(), or pass store= and bus="
        ) from None
    if loop not in _embedded:
        _embedded[loop] = (MemoryStore(), MemoryBus())
    return _embedded[loop]


def _is_store(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("put_artifact", "update_node", "record_batch"))


def resolve_backends(
    db: Any, store: Store | None, bus: Bus | None, kafka_bootstrap: str
) -> tuple[Store, Bus]:
    """``store=``/``bus=`` win; ``db=`` may itself be a FlowKit store; nothing at all
    means the embedded default (see :func:`embedded_backends`).

    A MongoDB database as ``db=`` (with Kafka at ``kafka_bootstrap``) is the
    distributed runtime, which this release does not include yet: say so plainly
    instead of failing somewhere later.
    """
    if db is None and store is None and bus is None:
        return embedded_backends()
    if store is None and db is not None:
        if not _is_store(db):
            raise ConfigError(
                f"db={type(db).__name__}: the MongoDB + Kafka ({kafka_bootstrap}) runtime is not in this "
                "release yet; run embedded (no db=, or flowkit.LocalRuntime, or `flowkit run`)"
            )
        store = db
    if store is None:
        raise ConfigError("bus= was given without store=: pass both (e.g. MemoryStore() and MemoryBus())")
    if bus is None:
        raise ConfigError("no bus: pass bus= (e.g. flowkit.bus.MemoryBus()) shared with the workers")
    return store, bus
