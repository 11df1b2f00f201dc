"""LocalRuntime's interface over the real test services, for the engine's scenarios.

``tests/engine/conftest.py`` runs every scenario of a module that uses ``LocalRuntime``
twice: embedded, and with this class in its place, so the two backends cannot drift.
Timeouts the scenarios pass are stretched: the same steps cost broker round trips here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flowkit.graph import GraphSpec
from flowkit.states import TaskStatus
from flowkit.testing.distributed import DistributedRuntime as _Runtime
from flowkit.worker.handlers.base import Handler

TIMEOUT_STRETCH = 4


class DistributedRuntime(_Runtime):
    def __init__(self, handlers: Mapping[str, Handler], **options: Any) -> None:
        super().__init__(
            handlers,
            kafka_bootstrap=os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"],
            mongo_url=os.environ["FLOWKIT_TEST_MONGO_URL"],
            **options,
        )

    async def run(
        self,
        graph: Mapping[str, Any] | GraphSpec,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> TaskStatus:
        return await super().run(graph, params, None if timeout is None else timeout * TIMEOUT_STRETCH)
