"""OutageTolerantStore: FlowKit's store calls wait out an unreachable database, nothing else."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from flowkit.store import outages
from flowkit.store.outages import OutageTolerantStore


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def write(self, value: int) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return value

    def version(self, task_id: str) -> int:
        return 7


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outages, "_FIRST_PAUSE_SEC", 0.0)


async def test_an_unreachable_database_is_waited_out() -> None:
    busy = OperationFailure("database is locked (5) (SQLITE_BUSY)", code=1)
    inner = Flaky([AutoReconnect("connection reset"), busy])
    store = OutageTolerantStore(inner)
    assert await store.write(3) == 3
    assert inner.calls == 3


async def test_other_errors_are_raised_at_once() -> None:
    inner = Flaky([DuplicateKeyError("E11000"), OperationFailure("bad update", code=9)])
    store = OutageTolerantStore(inner)
    with pytest.raises(DuplicateKeyError):
        await store.write(1)
    with pytest.raises(OperationFailure, match="bad update"):
        await store.write(1)
    assert inner.calls == 2


async def test_patience_runs_out() -> None:
    inner = Flaky([AutoReconnect("down")] * 50)
    store = OutageTolerantStore(inner, patience_sec=0.0)
    with pytest.raises(AutoReconnect):
        await store.write(1)
    assert inner.calls == 1


def test_plain_methods_pass_through() -> None:
    assert OutageTolerantStore(Flaky([])).version("t") == 7
