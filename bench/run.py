"""FlowKit against the machine's floor and against Celery + Redis, Prefect and Dagster, in one run.

    .venv/bin/python bench/run.py [--quick] [--only embedded|distributed|peer] [--repeat N]
                                  [--timeout SEC]

Every shape of ``shapes.py`` at its size and at twice it: on the embedded runtime
(next to the asyncio floor), on the distributed runtime (a coordinator and a worker
process over the test Kafka and MongoDB-protocol server, next to the raw Kafka and
``find_one_and_update`` floor) and on Celery 5 + Redis (Redis started here on
loopback, stopped after); the chain and the fan also on Prefect 3.9 and Dagster 1.13
in-process (``inprocess_peers.py``: their own virtualenv, ``bench/.peers-venv``, made
on first use). The distributed half starts the test services with
``scripts/testenv up kafka ferretdb`` (left running: they are shared). ``--only peer``
runs Celery, Prefect and Dagster.

Every measurement runs in a fresh process with a deadline (``--timeout``): one that
does not finish in time is stopped, with its processes, and reported as "did not
finish within N s" with the reason; the run goes on. ``results.json`` is written after
every measurement; ``results.md`` and ``results.png`` at the end (also after Ctrl-C)
from what was measured. Results go to ``bench/results/``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from isolate import Figures, MeasurementError, MeasurementFailed, measure
from records import CELERY, DISTRIBUTED, EMBEDDED, FLOOR, SERVICES, STORE_CEILING, Record, Run, write_json
from report import write
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
TIMEOUT_SEC = 240.0

# Each shape's size (full, --quick); every shape runs again at twice it.
SIZES = {"chain": (100, 50), "fan": (1000, 250), "streaming": (10_000, 1000), "scale": (200, 50)}


@dataclass
class Step:
    runtime: str
    shape: str
    size: int
    measure: Callable[[float, Callable[[str], None]], Figures]
    """Called with the timeout and a callback for progress notes."""
    runs: int


def isolated(fn: Callable[..., Figures], *args: Any) -> Callable[[float, Callable[[str], None]], Figures]:
    return lambda timeout, on_note: measure(fn, args, timeout, on_note)


def sizes(shape: str, quick: bool) -> list[int]:
    base = SIZES[shape][1] if quick else SIZES[shape][0]
    return [base, 2 * base]


def embedded_steps(quick: bool, runs: int) -> list[Step]:
    from embedded import embedded
    from floor import asyncio_floor

    steps = []
    for shape in SIZES:
        for size in sizes(shape, quick):
            steps.append(Step(FLOOR, shape, size, isolated(asyncio_floor, shape, size), runs))
            steps.append(Step(EMBEDDED, shape, size, isolated(embedded, shape, size), runs))
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
    from floor import kafka_floor, mongo_floor
    from store_ceiling import store_ceiling

    kafka, mongo = testenv()
    steps = [
        Step(SERVICES, "kafka", 1, isolated(kafka_floor, kafka), runs),
        Step(SERVICES, "mongo", 1, isolated(mongo_floor, mongo), runs),
        Step(SERVICES, STORE_CEILING, 1, isolated(store_ceiling, mongo), 1),
    ]
    for shape in SIZES:
        for size in sizes(shape, quick):
            steps.append(
                Step(DISTRIBUTED, shape, size, isolated(distributed, shape, size, kafka, mongo, logs), 1)
            )
    return steps


def peer_steps(quick: bool, runs: int, peer: Any) -> list[Step]:
    steps = []
    for shape in ("chain", "fan", "scale"):
        for size in sizes(shape, quick):
            steps.append(
                Step(CELERY, shape, size, lambda t, n, s=shape, z=size: peer.measure(s, z, t, n), runs)
            )
    return steps


def inprocess_peer_steps(quick: bool, runs: int, logs: Path) -> list[Step]:
    """Prefect and Dagster in-process on the chain and the fan; their virtualenv is made
    on first use (if that fails, every one of these steps fails with the reason)."""
    from inprocess_peers import PEERS, SHAPES, VENV, peers_python, run_in_venv, versions

    cases = [(peer, shape, size) for peer in PEERS for shape in SHAPES for size in sizes(shape, quick)]
    try:
        python = str(peers_python(logs))
        print(f"bench: {versions(Path(python))} in {VENV}", file=sys.stderr)
    except (RuntimeError, subprocess.CalledProcessError) as failed:
        return [Step(peer.runtime, shape, size, _failing(str(failed)), 1) for peer, shape, size in cases]
    steps = []
    for peer, shape, size in cases:
        run = isolated(run_in_venv, peer.name, shape, size, python, str(logs))
        steps.append(Step(peer.runtime, shape, size, run, runs))
    return steps


def _failing(reason: str) -> Callable[[float, Callable[[str], None]], Figures]:
    def fail(timeout: float, on_note: Callable[[str], None]) -> Figures:
        raise MeasurementFailed(reason)

    return fail


def median(runs: list[Figures]) -> tuple[Figures, dict[str, list[float]]]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}, {
        k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys
    }


@dataclass
class Runner:
    """Runs the steps one by one, keeping every record and writing results.json after each."""

    run: Run
    out: Path
    progress: Progress
    timeout: float

    def execute(self, steps: list[Step], bar: Any) -> None:
        for step in steps:
            self.progress.update(bar, description=self._label(step, 0))
            figures: list[Figures] = []
            error = ""
            for attempt in range(step.runs):
                label = self._label(step, attempt)
                self.progress.update(bar, description=label)
                try:
                    figures.append(
                        step.measure(
                            self.timeout,
                            lambda text, label=label: self.progress.update(
                                bar, description=f"{label}: {text}"
                            ),
                        )
                    )
                except MeasurementError as failed:
                    error = failed.reason
                    self.progress.console.print(f"[red]{step.runtime}: {step.shape} N={step.size:,}: {error}")
                    self.progress.advance(bar, step.runs - attempt)
                    break
                self.progress.advance(bar)
            if error:
                self.run.records.append(
                    Record(step.runtime, step.shape, step.size, {}, len(figures), {}, error)
                )
            else:
                middle, spread = median(figures)
                self.run.records.append(
                    Record(step.runtime, step.shape, step.size, middle, step.runs, spread)
                )
            write_json(self.run, self.out)

    @staticmethod
    def _label(step: Step, attempt: int) -> str:
        return f"{step.runtime}: {step.shape} N={step.size:,} (run {attempt + 1}/{step.runs})"


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {platform.python_version()}"


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in values)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse() -> argparse.Namespace:
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
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_SEC,
        help=f"seconds one measurement may take (default {TIMEOUT_SEC:.0f})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    args = parser.parse_args()
    if args.timeout <= 0:
        parser.error(f"--timeout must be a positive number of seconds (got {args.timeout})")
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    return args


def main() -> None:
    args = parse()
    runs = args.repeat or (1 if args.quick else 3)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _sigterm)  # stopped like Ctrl-C: everything cleaned up
    console = Console()
    load_before = os.getloadavg()
    run = Run(
        command=shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        load=f"load average (1/5/15 min) {_load(load_before)} at the start, on {os.cpu_count()} cores",
        records=[],
        timeout_sec=args.timeout,
    )
    logs = args.out / "logs"
    parts = args.only or ["embedded", "distributed", "peer"]
    interrupted = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            runner = Runner(run, args.out, progress, args.timeout)
            if "embedded" in parts:
                steps = embedded_steps(args.quick, runs)
                runner.execute(steps, progress.add_task("embedded", total=sum(s.runs for s in steps)))
            if "distributed" in parts:
                steps = distributed_steps(args.quick, runs, logs)
                runner.execute(steps, progress.add_task("distributed", total=sum(s.runs for s in steps)))
            if "peer" in parts:
                from peer import CeleryPeer

                with CeleryPeer(logs / "celery") as peer:
                    steps = peer_steps(args.quick, runs, peer)
                    runner.execute(steps, progress.add_task("Celery", total=sum(s.runs for s in steps)))
                steps = inprocess_peer_steps(args.quick, runs, logs)
                total = sum(s.runs for s in steps)
                runner.execute(steps, progress.add_task("Prefect, Dagster", total=total))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: writing what was measured")
    load_after = os.getloadavg()
    run.load = (
        f"load average (1/5/15 min) {_load(load_before)} at the start, {_load(load_after)} at the end, "
        f"on {os.cpu_count()} cores" + (" (interrupted)" if interrupted else "")
    )
    paths = write(run, args.out)
    console.print(paths["md"].read_text())
    console.print(f"written: {', '.join(str(p) for p in paths.values())}")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
