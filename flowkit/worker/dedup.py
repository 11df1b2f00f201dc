"""The seed's dedup cache: the attempts a worker has taken, so a command delivered again
runs nowhere twice and holds no slot.

A coordinator re-sends a command nobody accepted in time (to another partition), and
Kafka redelivers what was not committed when a worker left the group; after a worker
dies both copies can reach the same survivor. The store keeps the run exact (one claim
per attempt), but a copy that reaches the worker already running the attempt would be
claimed again by that worker and run a second time beside the first, holding a slot
another node waits for. So an attempt in a slot is always known here, and one that ran
here stays known for ``ttl_sec``, at most ``size`` of them (the oldest forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict

Attempt = tuple[str, str, int]
"""(task id, node id, attempt)."""


class TakenAttempts:
    def __init__(self, size: int, ttl_sec: float) -> None:
        self.size, self.ttl_sec = size, ttl_sec
        self._in_slots: set[Attempt] = set()
        self._ran: OrderedDict[Attempt, float] = OrderedDict()  # attempt -> when it ended here

    def __contains__(self, attempt: Attempt) -> bool:
        if attempt in self._in_slots:
            return True
        ended = self._ran.get(attempt)
        return ended is not None and time.monotonic() - ended < self.ttl_sec

    def take(self, attempt: Attempt) -> None:
        self._in_slots.add(attempt)

    def leave(self, attempt: Attempt, ran: bool) -> None:
        """Out of its slot; ``ran``: it was this worker's to run (claimed), so a copy that
        comes later is stale. One that was not claimed here may come again and run."""
        self._in_slots.discard(attempt)
        if not ran or self.size == 0:
            return
        self._ran[attempt] = time.monotonic()
        self._ran.move_to_end(attempt)
        while len(self._ran) > self.size:
            self._ran.popitem(last=False)
