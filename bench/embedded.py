"""The shapes on the embedded runtime (LocalRuntime: coordinator and workers in one process).

Each measurement runs in a fresh process (see ``run.py``), so its CPU seconds and peak
RSS are its own: coordinator and workers share that process here, so the figures are
of both together.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from shapes import (
    HANDLERS,
    chain_figures,
    chain_graph,
    fan_figures,
    fan_graph,
    scale_figures,
    scale_graph,
    streaming_figures,
    streaming_graph,
)

from flowkit import LocalRuntime
from flowkit.states import TaskStatus


async def _one(graph: dict[str, Any]) -> tuple[TaskStatus, float]:
    async with LocalRuntime(HANDLERS) as runtime:
        started = time.perf_counter()
        status = await runtime.run(graph)
        return status, time.perf_counter() - started


async def _scale(tasks: int) -> dict[str, float]:
    async with LocalRuntime(HANDLERS) as runtime:
        started = time.perf_counter()
        ids = [await runtime.submit(scale_graph()) for _ in range(tasks)]
        statuses = await asyncio.gather(*(runtime.coordinator.wait_task(i) for i in ids))
        return scale_figures(list(statuses), time.perf_counter() - started)


async def _measure(shape: str, size: int) -> dict[str, float]:
    if shape == "chain":
        return chain_figures(*await _one(chain_graph(size)))
    if shape == "fan":
        return fan_figures(*await _one(fan_graph(size)))
    if shape == "streaming":
        status, elapsed = await _one(streaming_graph(size))
        return streaming_figures(status, elapsed, size)
    if shape == "scale":
        return await _scale(size)
    raise ValueError(f"unknown shape {shape!r}")


def embedded(shape: str, size: int) -> dict[str, float]:
    """One run of ``shape`` at ``size``, with this process's CPU seconds and peak RSS."""
    cpu = time.process_time()
    figures = asyncio.run(_measure(shape, size))
    figures["process_cpu_s"] = time.process_time() - cpu
    figures["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures
