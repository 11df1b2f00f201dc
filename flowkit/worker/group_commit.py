"""Group commit: writes asked for while one is in flight go together in the next one
(reads by key alike).

A worker's slots claim, count batches and end attempts at the same moments (a fan-out
hands it many commands at once). Each write is one round trip to MongoDB, and a
MongoDB-protocol server on SQLite (FerretDB) runs one writer at a time, so sixteen
slots writing alone queue sixteen round trips. Here the first caller writes at once
(an idle worker waits for nothing more than before); whoever comes while that write is
under way waits for it, and then all of them go in one bulk write.

>>> claims = GroupCommit(store.claim_runs, lock=worker.run_writes)
>>> held = await claims(RunClaim(task_id, node_id, attempt, worker_id, lease_sec, now))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class WriteInterrupted(Exception):
    """The write that carried this item was cancelled midway: it may or may not have landed."""


@dataclass(eq=False)
class _Waiting(Generic[Item, Result]):
    item: Item
    result: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[Item, Result]):
    """Calls ``write_many(items)`` (one result per item, in order) with every item asked
    for since the last write began; at most one write at a time, under ``lock`` if given
    (shared with other writers of the same records).

    When a write of several items raises, each is written again alone, so that one bad
    item (a task deleted meanwhile) fails alone; the writes must be safe to repeat."""

    def __init__(
        self,
        write_many: Callable[[Sequence[Item]], Awaitable[list[Result]]],
        lock: asyncio.Lock | None = None,
    ) -> None:
        self._write_many = write_many
        self._lock = lock or asyncio.Lock()
        self._pending: list[_Waiting[Item, Result]] = []
        self._writing = False
        self._written = asyncio.Condition()

    async def __call__(self, item: Item) -> Result:
        waiting: _Waiting[Item, Result] = _Waiting(item)
        self._pending.append(waiting)
        try:
            while not waiting.result.done():
                if self._writing:
                    async with self._written:
                        await self._written.wait()
                    continue
                self._writing = True  # this caller writes the next round, its own item in it
                try:
                    await self._write_round()
                finally:
                    self._writing = False
                    async with self._written:
                        self._written.notify_all()
        except BaseException:  # cancelled: an item not yet taken is not written
            if waiting in self._pending:
                self._pending.remove(waiting)
            waiting.result.add_done_callback(_retrieve)
            raise
        return waiting.result.result()

    async def _write_round(self) -> None:
        round_, self._pending = self._pending, []
        try:
            async with self._lock:
                await self._write(round_)
        finally:
            for waiting in round_:  # cancelled midway: the others must not wait forever
                if not waiting.result.done():
                    waiting.result.set_exception(WriteInterrupted())

    async def _write(self, round_: list[_Waiting[Item, Result]]) -> None:
        try:
            results = await self._write_many([w.item for w in round_])
        except Exception as exc:
            if len(round_) == 1:
                round_[0].result.set_exception(exc)
                return
            for waiting in round_:
                await self._write_alone(waiting)
            return
        for waiting, result in zip(round_, results, strict=True):
            waiting.result.set_result(result)

    async def _write_alone(self, waiting: _Waiting[Item, Result]) -> None:
        try:
            (result,) = await self._write_many([waiting.item])
        except Exception as exc:
            waiting.result.set_exception(exc)
        else:
            waiting.result.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Nobody waits for this result any more: let an exception in it go unreported."""
    if not future.cancelled():
        future.exception()
