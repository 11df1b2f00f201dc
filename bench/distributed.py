"""The shapes on the distributed runtime: a coordinator and a worker as OS processes.

``flowkit coordinator`` and ``flowkit worker`` run as the user would start them, over
the test Kafka and MongoDB-protocol server, on a database and topic prefix of their
own (dropped after). This process only submits the task through FlowKit's client and
follows it. The processes' CPU seconds (counted from when a warm-up task has finished,
so start-up is left out) and peak RSS (``VmHWM``, start-up included) come from psutil
and /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from isolate import note
from shapes import (
    chain_figures,
    chain_graph,
    fan_figures,
    fan_graph,
    scale_figures,
    scale_graph,
    streaming_figures,
    streaming_graph,
)

from flowkit.console.client import Client, open_client
from flowkit.console.connection import ClientSettings
from flowkit.console.follow import follow_task
from flowkit.graph import validate_graph
from flowkit.states import TaskStatus
from flowkit.testing.distributed import drop_topics

BENCH_DIR = Path(__file__).resolve().parent
FLOWKIT = str(Path(sys.executable).with_name("flowkit"))
WORKER_CAPACITY = 16
STOP_TIMEOUT_SEC = 30.0
SCALE_FOLLOW_SEC = 10.0

SHAPES = ("chain", "fan", "streaming", "scale")

# Set to a directory, these run the processes through a tracer that writes there.
TRACERS = {"BENCH_TRACE_STORE": "trace_store.py", "BENCH_TRACE_TIMELINE": "trace_timeline.py"}

# Short lease and poll intervals, as flowkit.testing.distributed uses.
FAST = {
    "FLOWKIT_COORDINATOR_LEASE_CHECK_INTERVAL_SEC": "0.5",
    "FLOWKIT_COORDINATOR_ADOPT_INTERVAL_SEC": "0.5",
    "FLOWKIT_WORKER_HB_INTERVAL_SEC": "0.5",
    "FLOWKIT_WORKER_DB_CANCEL_POLL_MS": "200",
    "FLOWKIT_WORKER_PULL_POLL_MS_DEFAULT": "200",
}


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class Installation:
    """A coordinator and a worker process on one database and topic prefix."""

    kafka: str
    mongo_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    cpu_start: dict[str, float] = field(default_factory=dict)

    def start(self, logs: Path) -> None:
        env = (
            os.environ
            | FAST
            | {
                "FLOWKIT_KAFKA_BOOTSTRAP": self.kafka,
                "FLOWKIT_MONGO_URL": self.mongo_url,
                "FLOWKIT_TOPIC_PREFIX": self.prefix,
            }
        )
        commands = {
            "coordinator": [FLOWKIT, "coordinator", "--id", f"{self.database}-coord"],
            "worker": [
                FLOWKIT, "worker", "--roles", "noop,source,forward", "--handlers", "shapes:HANDLERS",
                "--capacity", str(WORKER_CAPACITY), "--id", f"{self.database}-worker",
            ],
        }  # fmt: skip
        for variable, tracer in TRACERS.items():  # the processes traced (see those modules)
            if os.environ.get(variable):
                launcher = [sys.executable, str(BENCH_DIR / tracer)]
                commands = {name: [*launcher, *command[1:]] for name, command in commands.items()}
                break
        logs.mkdir(parents=True, exist_ok=True)
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                # A session of its own: Ctrl-C reaches the bench, which stops these in order.
                self.processes[name] = subprocess.Popen(
                    command, cwd=BENCH_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip

    @property
    def database(self) -> str:
        return self.mongo_url.rsplit("/", 1)[1]

    @property
    def prefix(self) -> str:
        return f"{self.database}."

    def mark_cpu(self) -> None:
        self.cpu_start = {n: cpu_seconds(psutil.Process(p.pid)) for n, p in self.processes.items()}

    def usage(self) -> dict[str, float]:
        figures: dict[str, float] = {}
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} process exited with {process.returncode} during the run")
            figures[f"{name}_cpu_s"] = cpu_seconds(psutil.Process(process.pid)) - self.cpu_start[name]
            figures[f"{name}_peak_rss_mb"] = peak_rss_mb(process.pid)
        return figures

    def stop(self) -> None:
        for name in ("worker", "coordinator"):  # the worker drains first
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Progress:
    """Nodes finished across the followed tasks, sent to the bench as a note."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[int, int]] = {}
        self._sent = 0.0

    def __call__(self, status: TaskStatus) -> None:
        finished = sum(1 for n in status.nodes.values() if n.status.terminal)
        self.done[status.task_id] = (finished, len(status.nodes))
        if time.monotonic() - self._sent >= 1.0:
            self._sent = time.monotonic()
            done, total = (sum(x) for x in zip(*self.done.values(), strict=True))
            tasks = f" of {len(self.done)} tasks" if len(self.done) > 1 else ""
            note(f"{done:,}/{total:,} nodes finished{tasks}")


async def _wait(
    client: Client, task_id: str, progress: Progress | None = None, interval: float = 0.25
) -> TaskStatus:
    # Read at most every ``interval``: the figures come from the coordinator's timestamps,
    # and re-reading tasks at every change would load the store under test.
    return await follow_task(
        client.store,
        task_id,
        progress or (lambda _: None),
        poll_sec=max(0.5, interval),
        min_interval_sec=interval,
    )


async def _submit(client: Client, graph: dict[str, Any]) -> str:
    return (await client.submit(validate_graph(graph), {})).task_id


@asynccontextmanager
async def installation(
    kafka: str, mongo_base_url: str, logs: Path
) -> AsyncIterator[tuple[Installation, Client]]:
    """Started processes and a client, warmed up by one finished task; all gone after."""
    database = f"flowkit_bench_{uuid.uuid4().hex[:10]}"
    inst = Installation(kafka, mongo_base_url.rstrip("/") + "/" + database)
    settings = ClientSettings.model_validate(
        {"kafka_bootstrap": kafka, "mongo_url": inst.mongo_url, "topic_prefix": inst.prefix}
    )
    inst.start(logs / database)
    try:
        async with open_client(settings, kafka=True) as client:
            warm_up = await _wait(client, await _submit(client, chain_graph(2)))
            if not warm_up.finished:
                raise RuntimeError(f"warm-up task ended {warm_up.status.value}; see {logs / database}")
            inst.mark_cpu()
            yield inst, client
    finally:
        inst.stop()
        await _drop(kafka, inst)


async def _drop(kafka: str, inst: Installation) -> None:
    from pymongo import AsyncMongoClient

    mongo: Any = AsyncMongoClient(inst.mongo_url, serverSelectionTimeoutMS=10_000)
    try:
        await mongo.drop_database(inst.database)
    finally:
        await mongo.close()
    await drop_topics(kafka, inst.prefix)


def _elapsed(started: float, statuses: list[TaskStatus]) -> float:
    """From the submit to the coordinator's last ``finished_at`` (one clock: this machine's)."""
    ends = [s.finished_at for s in statuses if s.finished_at is not None]
    return max(ends) - started if ends else float("nan")


async def _measure(client: Client, shape: str, size: int) -> dict[str, float]:
    if shape == "scale":
        started = time.time()
        ids = await asyncio.gather(*(_submit(client, scale_graph()) for _ in range(size)))
        progress = Progress()
        # The followers' reads load the store under test: one read of a 20-node task is 22
        # round trips on FerretDB, so 100 tasks read every 2 s took more than half of its
        # work (100 x 20 ran at 25-33 nodes/s so followed, 64 at every 20 s). Every 10 s.
        statuses = list(await asyncio.gather(*(_wait(client, i, progress, SCALE_FOLLOW_SEC) for i in ids)))
        return scale_figures(statuses, _elapsed(started, statuses))
    graphs: dict[str, Callable[[int], dict[str, Any]]] = {
        "chain": chain_graph,
        "fan": fan_graph,
        "streaming": streaming_graph,
    }
    started = time.time()
    status = await _wait(client, await _submit(client, graphs[shape](size)), Progress())
    elapsed = _elapsed(started, [status])
    if shape == "chain":
        return chain_figures(status, elapsed)
    if shape == "fan":
        return fan_figures(status, elapsed)
    return streaming_figures(status, elapsed, size)


async def _distributed(shape: str, size: int, kafka: str, mongo: str, logs: Path) -> dict[str, float]:
    # SIGTERM (the bench's timeout) cancels the measurement: the installation's cleanup
    # stops the processes and drops the database before this process exits.
    main, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert main is not None

    def stop() -> None:
        loop.remove_signal_handler(signal.SIGTERM)  # once: the cleanup is not cut short
        main.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    async with installation(kafka, mongo, logs) as (inst, client):
        figures = await _measure(client, shape, size)
        return figures | inst.usage()


def distributed(shape: str, size: int, kafka: str, mongo: str, logs: Path) -> dict[str, float]:
    """One run of ``shape`` at ``size`` on fresh coordinator and worker processes."""
    return asyncio.run(_distributed(shape, size, kafka, mongo, logs))


def main() -> None:
    """``python bench/distributed.py SHAPE SIZE``: one run over the test services
    (``eval "$(scripts/testenv env)"`` first), its figures as JSON."""
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES or not sys.argv[2].isdigit():
        sys.exit(f"usage: python bench/distributed.py {'|'.join(SHAPES)} SIZE")
    try:
        kafka, mongo = os.environ["FLOWKIT_TEST_KAFKA_BOOTSTRAP"], os.environ["FLOWKIT_TEST_MONGO_URL"]
    except KeyError as missing:
        sys.exit(f'{missing.args[0]} is not set: run `eval "$(scripts/testenv env)"` first')
    logs = Path(tempfile.mkdtemp(prefix="flowkit-bench-"))
    print(json.dumps(distributed(sys.argv[1], int(sys.argv[2]), kafka, mongo, logs)))


if __name__ == "__main__":
    main()
