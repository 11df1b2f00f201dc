"""The worker's dedup cache: attempts in its slots, and those that ran here, for a while."""

from __future__ import annotations

import pytest

from flowkit.worker import dedup
from flowkit.worker.dedup import TakenAttempts

pytestmark = pytest.mark.unit


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(dedup.time, "monotonic", lambda: now[0])
    return now


def test_an_attempt_in_a_slot_is_known_until_it_leaves(clock: list[float]) -> None:
    taken = TakenAttempts(size=10, ttl_sec=60)
    taken.take(("t", "n", 1))
    assert ("t", "n", 1) in taken and ("t", "n", 2) not in taken
    taken.leave(("t", "n", 1), ran=False)  # not claimed here: a copy may come again and run
    assert ("t", "n", 1) not in taken


def test_one_that_ran_is_known_for_the_ttl(clock: list[float]) -> None:
    taken = TakenAttempts(size=10, ttl_sec=60)
    taken.take(("t", "n", 1))
    taken.leave(("t", "n", 1), ran=True)
    clock[0] += 59.9
    assert ("t", "n", 1) in taken
    clock[0] += 0.2
    assert ("t", "n", 1) not in taken


def test_at_most_size_that_ran_are_kept_the_oldest_forgotten_first(clock: list[float]) -> None:
    taken = TakenAttempts(size=2, ttl_sec=60)
    for attempt in (1, 2, 3):
        taken.take(("t", "n", attempt))
        taken.leave(("t", "n", attempt), ran=True)
    assert [("t", "n", a) in taken for a in (1, 2, 3)] == [False, True, True]


def test_size_zero_keeps_only_the_attempts_in_slots(clock: list[float]) -> None:
    taken = TakenAttempts(size=0, ttl_sec=60)
    taken.take(("t", "n", 1))
    taken.take(("t", "m", 1))
    taken.leave(("t", "n", 1), ran=True)
    assert ("t", "n", 1) not in taken and ("t", "m", 1) in taken
