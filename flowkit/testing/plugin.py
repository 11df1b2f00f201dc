"""The pytest plugin FlowKit installs (entry point ``pytest11: flowkit``).

Fixtures:

``run_flowkit_graph``
    :func:`flowkit.testing.run_graph`, to await in an async test::

        async def test_pipeline(run_flowkit_graph):
            result = await run_flowkit_graph("pipeline.yaml", HANDLERS)
            assert result.finished, result.states()

``flowkit_runtime``
    A factory of :class:`flowkit.LocalRuntime` for tests that drive the coordinator
    themselves (submit, watch, cancel)::

        async def test_cancel(flowkit_runtime):
            async with flowkit_runtime(HANDLERS) as runtime:
                task_id = await runtime.submit(graph)
                await runtime.coordinator.cancel_task(task_id)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..embedded import LocalRuntime
from . import run_graph


@pytest.fixture
def run_flowkit_graph() -> Callable[..., Any]:
    """``await run_flowkit_graph(graph, handlers, params=None, timeout=30)`` → TaskResult."""
    return run_graph


@pytest.fixture
def flowkit_runtime() -> type[LocalRuntime]:
    """``flowkit_runtime(handlers, concurrency=16)`` → a LocalRuntime to use with ``async with``."""
    return LocalRuntime
