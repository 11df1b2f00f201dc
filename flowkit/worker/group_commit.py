"""Group commit: writes asked for while one is in flight go together in the next one
(reads by key alike).

A worker's slots claim, count batches and end attempts at the same moments (a fan-out
hands it many commands at once). Each write is one round trip to MongoDB, and a
MongoDB-protocol server on SQLite (FerretDB) runs one writer at a time, so sixteen
slots writing alone queue sixteen round trips. Here the first caller writes at once
(an idle worker waits for nothing more than before); whoever comes while that write is
under way waits for it, and then all of them go in one bulk write. The idle case costs
a plain call: no future, no task (embedded runs write to memory, where this is all of it).

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
        self._lock = lock
        self._pending: list[_Waiting[Item, Result]] = []
        self._writing = False
        self._rounds: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        if self._writing:
            return await self._join(item)
        self._writing = True  # idle: this caller writes its own item at once
        try:
            if self._lock is None:
                (result,) = await self._write_many([item])
            else:
                async with self._lock:
                    (result,) = await self._write_many([item])
            return result
        finally:
            self._writing = False
            self._start_rounds()

    async def _join(self, item: Item) -> Result:
        waiting: _Waiting[Item, Result] = _Waiting(item)
        self._pending.append(waiting)
        try:
            return await waiting.result
        except asyncio.CancelledError:  # an item not yet taken is not written
            if waiting in self._pending:
                self._pending.remove(waiting)
            waiting.result.add_done_callback(_retrieve)
            raise

    def _start_rounds(self) -> None:
        """Those who asked meanwhile go together, written by a task of their own (their
        callers wait for results, none of them writes for the others)."""
        if self._pending and self._rounds is None:
            self._writing = True
            self._rounds = asyncio.get_running_loop().create_task(self._write_rounds())

    async def _write_rounds(self) -> None:
        try:
            while self._pending:
                round_, self._pending = self._pending, []
                try:
                    if self._lock is None:
                        await self._write(round_)
                    else:
                        async with self._lock:
                            await self._write(round_)
                finally:
                    for waiting in round_:  # cancelled midway: the others must not wait forever
                        _fail(waiting.result, WriteInterrupted())
        finally:
            self._writing = False
            self._rounds = None
            for waiting in self._pending:  # cancelled between rounds
                _fail(waiting.result, WriteInterrupted())
            self._pending = []

    async def _write(self, round_: list[_Waiting[Item, Result]]) -> None:
        try:
            results = await self._write_many([w.item for w in round_])
        except Exception as exc:
            if len(round_) == 1:
                _fail(round_[0].result, exc)
                return
            for waiting in round_:  # one by one, so that one bad item fails alone
                await self._write_alone(waiting)
            return
        for waiting, result in zip(round_, results, strict=True):
            _settle(waiting.result, result)

    async def _write_alone(self, waiting: _Waiting[Item, Result]) -> None:
        try:
            (result,) = await self._write_many([waiting.item])
        except Exception as exc:
            _fail(waiting.result, exc)
        else:
            _settle(waiting.result, result)


def _settle(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():  # done: its caller was cancelled (the result goes unread)
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Nobody waits for this result any more: let an exception in it go unreported."""
    if not future.cancelled():
        future.exception()
