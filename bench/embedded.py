"""Embedded-mode overhead: the three scenarios of the performance contract (DESIGN.md).

    .venv/bin/python bench/embedded.py [--repeat 5]

Each scenario runs ``--repeat`` times in a fresh LocalRuntime; the median is printed
with the spread. Handlers do nothing, so the figures are FlowKit's own overhead
(validation, scheduling, bus, store, worker runtime), create_task to the end.
This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable

from shapes import chain, fan, streaming

from flowkit import LocalRuntime

SCENARIOS: list[tuple[str, str, str, Callable[[], Awaitable[float]]]] = [
    ("chain of 1,000 no-op nodes", "ms/node", "<= 0.2", lambda: chain(LocalRuntime, 1000)),
    ("1,000-wide fan-out + fan-in", "nodes/s", ">= 20,000", lambda: fan(LocalRuntime, 1000)),
    (
        "3-stage first_batch pipeline, 10,000 batches",
        "batches/s",
        ">= 5,000",
        lambda: streaming(LocalRuntime, 10_000),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'scenario':48} {'median':>10} {'min..max':>21}  unit       target")
    for name, unit, target, scenario in SCENARIOS:
        figures = [asyncio.run(scenario()) for _ in range(args.repeat)]
        spread = f"{min(figures):,.3f}..{max(figures):,.3f}"
        print(f"{name:48} {statistics.median(figures):>10,.3f} {spread:>21}  {unit:10} {target}", flush=True)


if __name__ == "__main__":
    main()
