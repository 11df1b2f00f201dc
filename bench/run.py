"""FlowKit against the machine's floor and against Celery + Redis, in one run.

    .venv/bin/python bench/run.py [--quick] [--only embedded|distributed|peer] [--repeat N]

Every shape of ``shapes.py`` at its size and at twice it: on the embedded runtime
(next to the asyncio floor), on the distributed runtime (a coordinator and a worker
process over the test Kafka and MongoDB-protocol server, next to the raw Kafka and
``find_one_and_update`` floor) and on Celery 5 + Redis (Redis started here on
loopback, stopped after). The distributed half starts the test services with
``scripts/testenv up kafka ferretdb`` (left running: they are shared). Results go to
``bench/results/`` (results.md, results.png, results.json). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import logging
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from report import CELERY, DISTRIBUTED, EMBEDDED, FLOOR, SERVICES, Record, Run, write
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"

# Each shape's size (full, --quick); every shape runs again at twice it. Distributed
# streaming is smaller: at its current rate 10,000 batches would take many minutes.
SIZES = {"chain": (100, 50), "fan": (1000, 250), "streaming": (10_000, 1000), "scale": (200, 50)}
DISTRIBUTED_STREAMING = (500, 100)

Figures = dict[str, float]


@dataclass
class Step:
    runtime: str
    shape: str
    size: int
    measure: Callable[[], Figures]
    runs: int


def sizes(shape: str, quick: bool, runtime: str = EMBEDDED) -> list[int]:
    table = DISTRIBUTED_STREAMING if runtime == DISTRIBUTED and shape == "streaming" else SIZES[shape]
    base = table[1] if quick else table[0]
    return [base, 2 * base]


def in_fresh_process(
    pool: concurrent.futures.ProcessPoolExecutor, fn: Callable[..., Figures], *args: object
) -> Callable[[], Figures]:
    return lambda: pool.submit(fn, *args).result()


def embedded_steps(quick: bool, runs: int, pool: concurrent.futures.ProcessPoolExecutor) -> list[Step]:
    from embedded import embedded
    from floor import asyncio_floor

    steps = []
    for shape in SIZES:
        for size in sizes(shape, quick):
            steps.append(Step(FLOOR, shape, size, in_fresh_process(pool, asyncio_floor, shape, size), runs))
            steps.append(Step(EMBEDDED, shape, size, in_fresh_process(pool, embedded, shape, size), runs))
    return steps


def testenv() -> tuple[str, str]:
    """Kafka's bootstrap and the MongoDB URL of the test services (started if need be)."""
    script = str(REPO / "scripts" / "testenv")
    subprocess.run([script, "up", "kafka", "ferretdb"], check=True, capture_output=True)
    env = subprocess.run(
        [script, "env", "kafka", "ferretdb"], check=True, capture_output=True, text=True
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1)
        for line in env.splitlines()
        if line.startswith("export FLOWKIT_")
    )
    return values["FLOWKIT_TEST_KAFKA_BOOTSTRAP"], values["FLOWKIT_TEST_MONGO_URL"]


def distributed_steps(quick: bool, runs: int, logs: Path) -> list[Step]:
    from distributed import distributed
    from floor import kafka_round_trip, mongo_update

    kafka, mongo = testenv()
    steps = [
        Step(SERVICES, "kafka", 1, lambda: asyncio.run(kafka_round_trip(kafka)), runs),
        Step(SERVICES, "mongo", 1, lambda: asyncio.run(mongo_update(mongo)), runs),
    ]
    for shape in SIZES:
        for size in sizes(shape, quick, DISTRIBUTED):
            steps.append(
                Step(
                    DISTRIBUTED, shape, size, lambda s=shape, n=size: distributed(s, n, kafka, mongo, logs), 1
                )
            )
    return steps


def peer_steps(quick: bool, runs: int, peer: object) -> list[Step]:
    steps = []
    for shape in ("chain", "fan", "scale"):
        for size in sizes(shape, quick):
            steps.append(Step(CELERY, shape, size, lambda s=shape, n=size: peer.measure(s, n), runs))  # type: ignore[attr-defined]
    return steps


def median(runs: list[Figures]) -> tuple[Figures, dict[str, list[float]]]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}, {
        k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys
    }


def execute(steps: list[Step], progress: Progress, bar: object, records: list[Record]) -> None:
    for step in steps:
        figures = []
        for attempt in range(step.runs):
            progress.update(
                bar,
                description=f"{step.runtime}: {step.shape} N={step.size:,} (run {attempt + 1}/{step.runs})",
            )  # type: ignore[arg-type]
            figures.append(step.measure())
            progress.advance(bar)  # type: ignore[arg-type]
        middle, spread = median(figures)
        records.append(Record(step.runtime, step.shape, step.size, middle, step.runs, spread))


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument(
        "--only",
        action="append",
        choices=["embedded", "distributed", "peer"],
        help="a part of the run (repeatable)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per figure (default 3; 1 with --quick)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    args = parser.parse_args()
    runs = args.repeat or (1 if args.quick else 3)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    console = Console()
    load_before = os.getloadavg()
    records: list[Record] = []
    logs = args.out / "logs"
    context = multiprocessing.get_context("spawn")
    with (
        concurrent.futures.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        parts = args.only or ["embedded", "distributed", "peer"]
        if "embedded" in parts:
            steps = embedded_steps(args.quick, runs, pool)
            bar = progress.add_task("embedded", total=sum(s.runs for s in steps))
            execute(steps, progress, bar, records)
        if "distributed" in parts:
            steps = distributed_steps(args.quick, runs, logs)
            bar = progress.add_task("distributed", total=sum(s.runs for s in steps))
            execute(steps, progress, bar, records)
        if "peer" in parts:
            from peer import CeleryPeer

            with CeleryPeer(logs / "celery") as peer:
                steps = peer_steps(args.quick, runs, peer)
                bar = progress.add_task("Celery", total=sum(s.runs for s in steps))
                execute(steps, progress, bar, records)
    load_after = os.getloadavg()
    run = Run(
        command=shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        load=(
            f"load average (1/5/15 min) {' / '.join(f'{x:.1f}' for x in load_before)} at the start, "
            f"{' / '.join(f'{x:.1f}' for x in load_after)} at the end, on {os.cpu_count()} cores"
        ),
        records=records,
    )
    paths = write(run, args.out)
    console.print(paths["md"].read_text())
    console.print(f"written: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
