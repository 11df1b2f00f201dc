"""Memory over a long streaming run: does the process stay flat while batches flow?

    eval "$(scripts/testenv env kafka ferretdb)"
    .venv/bin/python bench/memory.py [--batches 20000] [--embedded]

Runs the 3-stage ``first_batch`` pipeline of ``bench/shapes.py`` (coordinator and
workers in this process; over Kafka and the MongoDB-protocol server unless
``--embedded``) and prints the resident set size at every tenth of the way, read from
/proc. Flat means the growth between the second and the last tenth is small against
the total: per-batch state does not pile up. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from shapes import Forward, Source, streaming_graph

from flowkit import LocalRuntime
from flowkit.testing.distributed import DistributedRuntime


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run(batches: int, embedded: bool) -> list[tuple[int, float]]:
    handlers: dict[str, Any] = {"source": Source(), "forward": Forward()}
    runtime: Any = (
        LocalRuntime(handlers)
        if embedded
        else DistributedRuntime(
            handlers,
            kafka_bootstrap=os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"],
            mongo_url=os.environ["FLOWKIT_TEST_MONGO_URL"],
        )
    )
    samples: list[tuple[int, float]] = []
    async with runtime:
        task_id = await runtime.submit(streaming_graph(batches))
        ended = asyncio.create_task(runtime.coordinator.wait_task(task_id))
        next_mark = 0
        while not ended.done():
            status = await runtime.coordinator.get_status(task_id)
            done = status.nodes["s3"].batches
            if done >= next_mark:
                samples.append((done, rss_mb()))
                next_mark += batches // 10
            await asyncio.wait({ended}, timeout=0.5)
        final = await ended
        samples.append((final.nodes["s3"].batches, rss_mb()))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    samples = asyncio.run(run(args.batches, args.embedded))
    print(f"{'batches through stage 3':>24}  RSS MB")
    for done, mb in samples:
        print(f"{done:>24,}  {mb:7.1f}")
    print(f"{args.batches:,} batches in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
