"""Choosing the store and bus behind a Coordinator or Worker from what the user passed."""

from __future__ import annotations

from typing import Any

from .bus.base import Bus
from .errors import ConfigError
from .store.base import Store


def _is_store(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("put_artifact", "update_node", "record_batch"))


def resolve_backends(
    db: Any, store: Store | None, bus: Bus | None, kafka_bootstrap: str
) -> tuple[Store, Bus]:
    """``store=``/``bus=`` win; ``db=`` may itself be a FlowKit store.

    A MongoDB database as ``db=`` (with Kafka at ``kafka_bootstrap``) is the
    distributed runtime, which this release does not include yet: say so plainly
    instead of failing somewhere later.
    """
    if store is None and db is not None:
        if _is_store(db):
            store = db
        else:
            raise ConfigError(
                f"db={type(db).__name__}: the MongoDB + Kafka ({kafka_bootstrap}) runtime is not in this "
                "release yet; run embedded with flowkit.LocalRuntime / `flowkit run`, or pass store= and bus="
            )
    if store is None:
        raise ConfigError("no store: pass store= (e.g. flowkit.store.MemoryStore()) or db=")
    if bus is None:
        raise ConfigError("no bus: pass bus= (e.g. flowkit.bus.MemoryBus()) shared with the workers")
    return store, bus
