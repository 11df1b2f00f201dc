"""Which store and bus a Coordinator or Worker runs on, decided from what the user passed.

The engine never chooses: ``Coordinator(db=...)`` and ``Worker(db=...)`` ask
:func:`resolve_backends`, which returns a :class:`Backends`:

- nothing passed: the embedded default, one in-process store and bus per event loop;
- ``store=``/``bus=`` (or a FlowKit store as ``db=``): exactly those, owned by the caller;
- a MongoDB database as ``db=`` (pymongo's async client or motor): a MongoStore on it and
  a KafkaBus at ``cfg.kafka_bootstrap`` with the change feed. Everything created in one
  process with the same database and Kafka settings shares ONE bus and feed; the first
  ``acquire()`` starts them and the last ``release()`` stops them.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any, cast

from ..bus.base import Bus
from ..bus.memory import MemoryBus
from ..config import ConnectionSettings
from ..errors import ConfigError
from ..store.base import Store
from ..store.memory import MemoryStore
from .feed import ChangeFeed


@dataclass(eq=False)
class Backends:
    """A store and a bus, started by the first user and stopped by the last."""

    store: Store
    bus: Bus
    feed: ChangeFeed | None = None
    owns_bus: bool = True
    """False when the caller passed ``bus=``: then the caller starts and stops it."""
    _users: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _on_last_release: Any = None

    @property
    def distributed(self) -> bool:
        return self.feed is not None

    async def acquire(self) -> None:
        async with self._lock:
            if self._users == 0 and self.owns_bus:
                await self.bus.start()
                if self.feed is not None:
                    try:
                        await self.feed.start()
                    except BaseException:
                        await self.bus.stop()
                        raise
            self._users += 1

    async def release(self) -> None:
        async with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0 and self.owns_bus:
                if self.feed is not None:
                    await self.feed.stop()
                await self.bus.stop()
                if self._on_last_release is not None:
                    self._on_last_release()


# Coordinators and workers created without a store or bus in the same event loop
# share one in-process pair: the embedded default.
_embedded: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Backends] = weakref.WeakKeyDictionary()
# Distributed backends shared within a process, by (database, Kafka settings).
_shared: dict[tuple[int, str, str], Backends] = {}


def embedded_backends() -> Backends:
    """The in-process store and bus shared by everything created in the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "without db=, store= or bus=, coordinators and workers share an in-process backend per "
            "event loop: create them inside `async def main()` run by asyncio.run(), or pass store= and bus="
        ) from None
    if loop not in _embedded:
        _embedded[loop] = Backends(MemoryStore(), MemoryBus())
    return _embedded[loop]


def is_mongo_database(obj: Any) -> bool:
    """A pymongo (async) or motor database object."""
    module = type(obj).__module__
    return module.startswith(("pymongo", "motor")) and hasattr(obj, "list_collection_names")


def _is_store(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("put_artifact", "update_node", "record_batch"))


def resolve_backends(
    db: Any, store: Store | None, bus: Bus | None, settings: ConnectionSettings, client_id: str
) -> Backends:
    """See the module docstring."""
    if db is None and store is None and bus is None:
        return embedded_backends()
    if store is None and db is not None and is_mongo_database(db):
        if bus is not None:
            mongo = mongo_store(db)
            return Backends(mongo, bus, ChangeFeed(mongo, bus), owns_bus=False)
        return shared_distributed(db, settings, client_id)
    if store is None and db is not None:
        if not _is_store(db):
            raise ConfigError(
                f"db={type(db).__name__}: expected a MongoDB database (pymongo AsyncMongoClient()[name] "
                "or motor AsyncIOMotorClient()[name]) or a FlowKit store"
            )
        store = db
    if store is None:
        raise ConfigError("bus= was given without store=: pass both (e.g. MemoryStore() and MemoryBus())")
    if bus is None:
        raise ConfigError("no bus: pass bus= (e.g. flowkit.bus.MemoryBus()) shared with the workers")
    return Backends(store, bus, owns_bus=False)


def mongo_store(db: Any) -> Store:
    """A MongoStore on ``db`` that rides out database restarts (see :mod:`flowkit.store.outages`)."""
    from ..store.mongo import MongoStore
    from ..store.outages import OutageTolerantStore

    return cast(Store, OutageTolerantStore(MongoStore(db)))


def shared_distributed(db: Any, settings: ConnectionSettings, client_id: str) -> Backends:
    """The process's MongoStore + KafkaBus + ChangeFeed for this database and Kafka settings."""
    from .connect import kafka_bus

    key = (id(db), settings.kafka_bootstrap, settings.topic_prefix)
    backends = _shared.get(key)
    if backends is None:
        store = mongo_store(db)
        bus = kafka_bus(settings, client_id)
        backends = Backends(store, bus, ChangeFeed(store, bus))
        backends._on_last_release = lambda: _shared.pop(key, None)
        _shared[key] = backends
    return backends
