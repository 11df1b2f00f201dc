"""GroupCommit: items asked for during a write go together in the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from flowkit.worker.group_commit import GroupCommit

pytestmark = pytest.mark.unit


class Writes:
    """Records each round; a round waits for ``release`` while ``hold`` is set."""

    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.hold = False
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.refuse: set[int] = set()

    async def write_many(self, items: Sequence[int]) -> list[int]:
        self.rounds.append(list(items))
        self.started.set()
        if self.hold:
            await self.release.wait()
        bad = self.refuse.intersection(items)
        if bad:
            raise ValueError(f"refused {sorted(bad)}")
        return [item * 10 for item in items]


async def during_a_held_write(
    commit: GroupCommit[int, int], writes: Writes, *items: int
) -> tuple[asyncio.Task[int], list[asyncio.Task[int]]]:
    """Item 1 written in a round held open, ``items`` asked for while it is."""
    writes.hold = True
    first = asyncio.create_task(commit(1))
    await writes.started.wait()
    rest = [asyncio.create_task(commit(i)) for i in items]
    await asyncio.sleep(0)  # they queue (not a synchronisation: the round is held)
    return first, rest


async def test_an_idle_writer_writes_at_once_and_alone() -> None:
    writes = Writes()
    commit = GroupCommit(writes.write_many)
    assert await commit(1) == 10
    assert await commit(2) == 20
    assert writes.rounds == [[1], [2]]


async def test_items_asked_for_during_a_write_go_together_in_the_next() -> None:
    writes = Writes()
    first, rest = await during_a_held_write(GroupCommit(writes.write_many), writes, 2, 3, 4)
    writes.release.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert writes.rounds == [[1], [2, 3, 4]]


async def test_a_failed_round_is_written_again_one_by_one_so_one_bad_item_fails_alone() -> None:
    writes = Writes()
    writes.refuse = {3}
    first, rest = await during_a_held_write(GroupCommit(writes.write_many), writes, 2, 3, 4)
    writes.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError) and "refused [3]" in str(results[2])
    assert writes.rounds == [[1], [2, 3, 4], [2], [3], [4]]


async def test_a_writer_cancelled_midway_leaves_no_one_waiting() -> None:
    writes = Writes()
    first, (second,) = await during_a_held_write(GroupCommit(writes.write_many), writes, 2)
    writes.started.clear()
    first.cancel()
    await writes.started.wait()  # the second caller writes its own round now
    writes.release.set()
    assert await second == 20
    with pytest.raises(asyncio.CancelledError):
        await first
    assert writes.rounds == [[1], [2]]


async def test_a_caller_cancelled_before_its_round_is_not_written() -> None:
    writes = Writes()
    first, (second, third) = await during_a_held_write(GroupCommit(writes.write_many), writes, 2, 3)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    writes.release.set()
    assert (await first, await third) == (10, 30)
    assert writes.rounds == [[1], [3]]


async def test_a_caller_cancelled_during_its_round_leaves_the_others_their_results() -> None:
    writes = Writes()
    first, (second, third) = await during_a_held_write(GroupCommit(writes.write_many), writes, 2, 3)
    writes.started.clear()
    writes.release.set()  # lets the first round end, then holds the next
    writes.release.clear()
    assert await first == 10
    await writes.started.wait()
    second.cancel()
    writes.release.set()
    assert await third == 30
    with pytest.raises(asyncio.CancelledError):
        await second
    assert writes.rounds == [[1], [2, 3]]


async def test_rounds_of_two_commits_sharing_a_lock_never_overlap() -> None:
    lock = asyncio.Lock()
    inside: list[str] = []

    async def write(name: str, items: Sequence[int]) -> list[int]:
        assert not inside, f"{name} wrote while {inside} did"
        inside.append(name)
        await asyncio.sleep(0)
        inside.remove(name)
        return list(items)

    claims: GroupCommit[int, int] = GroupCommit(lambda items: write("claims", items), lock)
    ends: GroupCommit[int, int] = GroupCommit(lambda items: write("ends", items), lock)
    results = await asyncio.gather(*(claims(i) for i in range(5)), *(ends(i) for i in range(5)))
    assert results == [*range(5), *range(5)]
