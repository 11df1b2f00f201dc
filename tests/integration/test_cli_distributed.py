"""The distributed commands as real OS processes on the test Kafka and MongoDB (FerretDB):
``flowkit coordinator`` and ``flowkit worker`` run until SIGTERM; ``submit``, ``status``,
``watch``, ``cancel``, ``tasks`` and ``workers`` talk to them through the services only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/etl/pipeline.yaml"
ETL_HANDLERS = "examples.etl.handlers:HANDLERS"
ETL_ROLES = "extractor,transformer,loader,rates"

# Short intervals, so that heartbeats, adoption and drains take seconds.
FAST = {
    "FLOWKIT_WORKER_HB_INTERVAL_SEC": "1",
    "FLOWKIT_WORKER_DRAIN_TIMEOUT_SEC": "10",
    "FLOWKIT_COORDINATOR_ADOPT_INTERVAL_SEC": "0.5",
    "FLOWKIT_COORDINATOR_TASK_LEASE_SEC": "5",
}

SLOW_HANDLERS = """
import asyncio
from flowkit.worker.handlers.base import BatchResult, Handler


class Nap(Handler):
    async def process_batch(self, batch, ctx):
        await asyncio.sleep(2)
        return BatchResult(metrics={"naps": 1})


class Slow(Handler):
    async def process_batch(self, batch, ctx):
        for _ in range(1200):
            if ctx.cancel_flag.is_set():
                raise asyncio.CancelledError()
            await asyncio.sleep(0.05)
        return BatchResult()


HANDLERS = {"nap": Nap(), "slow": Slow()}
"""
SLOW_GRAPH = (
    "nodes:\n  - {node_id: sleepy, type: slow}\n  - {node_id: after, type: slow, depends_on: [sleepy]}\n"
)
NAP_GRAPH = "nodes:\n  - {node_id: nap, type: nap}\n"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.1)


@dataclass
class Installation:
    """The environment of one test's processes (its own topics and database), and the
    long-running processes it started, each with a log file."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, cwd: Path = REPO) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowkit.cli", *args],
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def coordinator(self, name: str = "c1") -> None:
        self.start(name, "coordinator", "--id", name)
        self.wait_running(name)

    def worker(self, name: str, roles: str, handlers: str, cwd: Path = REPO) -> None:
        # A slot per role: with fewer, an idle role's taker can hold the only slot (engine issue).
        capacity = str(len(roles.split(",")))
        args = ["--id", name, "--roles", roles, "--handlers", handlers, "--capacity", capacity]
        self.start(name, "worker", *args, cwd=cwd)
        self.wait_running(name)

    def wait_running(self, name: str) -> None:
        def running() -> bool:
            if self.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited with {self.procs[name].returncode}\n{self.log(name)}")
            return ": running (SIGTERM or Ctrl-C stops it)" in self.log(name)

        wait_for(running, 30, f"{name} to run", self.all_logs)

    def flowkit(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A client command, run to its end."""
        return subprocess.run(
            [sys.executable, "-m", "flowkit.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def status(self, task_id: str) -> dict[str, Any]:
        proc = self.flowkit("status", task_id, "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def terminate(self, name: str, timeout: float = 30) -> int:
        """SIGTERM, then the exit code once the process has stopped."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still runs {timeout}s after SIGTERM\n{self.log(name)}") from None

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-4000:]}" for name in self.procs)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def installation(
    kafka_bootstrap: str, kafka_topic_prefix: str, mongo_url: str, tmp_path: Path
) -> Iterator[Installation]:
    from pymongo import MongoClient

    database = f"flowkit_cli_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        **FAST,
        "FLOWKIT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWKIT_MONGO_URL": f"{mongo_url.rstrip('/')}/{database}",
        "FLOWKIT_TOPIC_PREFIX": kafka_topic_prefix,
        "PYTHONPATH": str(REPO),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    installation = Installation(env, logs)
    try:
        yield installation
    finally:
        installation.kill_all()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
        try:
            client.drop_database(database)
        finally:
            client.close()


@pytest.fixture
def slow_handlers(tmp_path: Path) -> Path:
    """A folder with handlers that take a while (``nap`` 2 s, ``slow`` until cancelled) and graphs."""
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "cli_slow_handlers.py").write_text(SLOW_HANDLERS)
    (folder / "slow.yaml").write_text(SLOW_GRAPH)
    (folder / "nap.yaml").write_text(NAP_GRAPH)
    return folder


def submit_slow_and_wait_running(
    installation: Installation, slow_handlers: Path, graph: str = "slow.yaml", node: str = "sleepy"
) -> str:
    """Submit one of the slow graphs; its task id once ``node`` runs."""
    submitted = installation.flowkit("submit", str(slow_handlers / graph))
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    wait_for(
        lambda: installation.status(task_id)["nodes"][node]["status"] == "running",
        30,
        f"node {node} to run",
        installation.all_logs,
    )
    return task_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_submit_wait_json_finishes_every_node_with_the_metrics_of_an_embedded_run(
    installation: Installation,
) -> None:
    installation.coordinator("c1")
    installation.worker("w1", ETL_ROLES, ETL_HANDLERS)
    submitted = installation.flowkit("submit", EXAMPLE, "--wait", "--json")
    embedded = installation.flowkit("run", EXAMPLE, "--handlers", ETL_HANDLERS, "--json")
    assert submitted.returncode == 0, f"{submitted.stderr}\n{installation.all_logs()}"
    assert embedded.returncode == 0, embedded.stderr
    distributed, alone = json.loads(submitted.stdout), json.loads(embedded.stdout)
    assert distributed["status"] == "finished"
    assert len(distributed["nodes"]) == 6
    assert {n["status"] for n in distributed["nodes"].values()} == {"finished"}
    for node_id, node in alone["nodes"].items():
        assert distributed["nodes"][node_id]["metrics"] == node["metrics"], node_id
        assert distributed["nodes"][node_id]["batches"] == node["batches"], node_id
    assert distributed["result"] == alone["result"]
    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0


def test_status_tasks_and_workers_show_a_submitted_task(installation: Installation) -> None:
    installation.coordinator("c1")
    installation.worker("w1", ETL_ROLES, ETL_HANDLERS)
    submitted = installation.flowkit("submit", EXAMPLE)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert len(submitted.stdout.splitlines()) == 1

    watched = installation.flowkit("watch", task_id)
    assert watched.returncode == 0, f"{watched.stderr}\n{installation.all_logs()}"
    assert f"task {task_id}  finished  6/6 nodes done" in watched.stdout

    assert installation.status(task_id)["status"] == "finished"
    table = installation.flowkit("status", task_id)
    assert table.returncode == 0, table.stderr
    assert "totals" in table.stdout and "orders=48" in table.stdout

    tasks = installation.flowkit("tasks")
    assert tasks.returncode == 0, tasks.stderr
    [row] = [line for line in tasks.stdout.splitlines() if task_id in line]
    assert "finished" in row and "6/6" in row and "c1" in row

    workers = installation.flowkit("workers")
    assert workers.returncode == 0, workers.stderr
    [row] = [line for line in workers.stdout.splitlines() if "w1" in line]
    assert "online" in row and "extractor" in row and "ago" in row
    assert f"/{installation.procs['w1'].pid}" in row

    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0
    after = installation.flowkit("workers")
    [row] = [line for line in after.stdout.splitlines() if "w1" in line]
    assert "offline" in row


def test_cancel_ends_a_running_task_cancelled(installation: Installation, slow_handlers: Path) -> None:
    installation.coordinator("c1")
    installation.worker("w1", "slow", "cli_slow_handlers:HANDLERS", cwd=slow_handlers)
    task_id = submit_slow_and_wait_running(installation, slow_handlers)

    cancelled = installation.flowkit("cancel", task_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancel requested: task {task_id} (running) is cancelled by c1" in cancelled.stdout

    watched = installation.flowkit("watch", task_id, "--json", timeout=60)
    assert watched.returncode == 1, f"{watched.stderr}\n{installation.all_logs()}"
    final = json.loads(watched.stdout)
    assert final["status"] == "cancelled"
    assert {n["status"] for n in final["nodes"].values()} == {"cancelled"}

    again = installation.flowkit("cancel", task_id)
    assert again.returncode == 0
    assert "has already ended (cancelled): nothing to cancel" in again.stdout
    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0


def test_submit_wait_timeout_stops_watching_and_the_task_keeps_running(
    installation: Installation, slow_handlers: Path
) -> None:
    installation.coordinator("c1")
    installation.worker("w1", "slow", "cli_slow_handlers:HANDLERS", cwd=slow_handlers)
    waited = installation.flowkit("submit", str(slow_handlers / "slow.yaml"), "--wait", "--timeout", "3")
    assert waited.returncode == 1, waited.stderr
    task_id = waited.stdout.splitlines()[0]
    assert f"stopped watching; task {task_id} keeps running (flowkit cancel {task_id})" in waited.stderr
    assert installation.status(task_id)["status"] == "running"
    assert installation.flowkit("cancel", task_id).returncode == 0
    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0


def test_ctrl_c_stops_watching_with_130_and_the_task_keeps_running(
    installation: Installation, slow_handlers: Path
) -> None:
    installation.coordinator("c1")
    installation.worker("w1", "slow", "cli_slow_handlers:HANDLERS", cwd=slow_handlers)
    task_id = installation.flowkit("submit", str(slow_handlers / "slow.yaml")).stdout.strip()
    watcher = installation.start("watch", "watch", task_id)
    wait_for(
        lambda: "sleepy: running (attempt 1)" in installation.log("watch"),
        30,
        "the watcher to show the running node",
        installation.all_logs,
    )
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(10) == 130
    assert f"stopped watching; task {task_id} keeps running" in installation.log("watch")
    assert installation.status(task_id)["status"] == "running"
    assert installation.flowkit("cancel", task_id).returncode == 0
    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0


def test_sigterm_lets_a_running_attempt_finish_before_the_worker_exits(
    installation: Installation, slow_handlers: Path
) -> None:
    installation.coordinator("c1")
    installation.worker("w1", "nap", "cli_slow_handlers:HANDLERS", cwd=slow_handlers)
    task_id = submit_slow_and_wait_running(installation, slow_handlers, "nap.yaml", "nap")
    assert installation.terminate("w1") == 0
    assert "draining 1 running attempt(s)" in installation.log("w1")
    final = installation.flowkit("watch", task_id, "--json", timeout=60)
    assert final.returncode == 0, f"{final.stderr}\n{installation.all_logs()}"
    assert json.loads(final.stdout)["nodes"]["nap"]["attempts"] == 1  # finished by the drained worker
    assert installation.terminate("c1") == 0


def test_a_second_sigterm_stops_a_draining_worker_at_once(
    installation: Installation, slow_handlers: Path
) -> None:
    installation.coordinator("c1")
    installation.worker("w1", "slow", "cli_slow_handlers:HANDLERS", cwd=slow_handlers)
    task_id = submit_slow_and_wait_running(installation, slow_handlers)
    worker = installation.procs["w1"]
    worker.send_signal(signal.SIGTERM)
    wait_for(
        lambda: "draining 1 running attempt(s)" in installation.log("w1"),
        10,
        "the drain",
        installation.all_logs,
    )
    started = time.monotonic()
    assert installation.terminate("w1", timeout=8) == 0  # the drain timeout is 10 s
    assert time.monotonic() - started < 8
    assert "SIGTERM again: stopping at once" in installation.log("w1")
    assert installation.flowkit("cancel", task_id).returncode == 0
    assert installation.terminate("c1") == 0


@pytest.mark.parametrize("command", ["coordinator", "worker", "submit"])
def test_kafka_not_there_is_one_line_naming_it_and_exit_2(installation: Installation, command: str) -> None:
    where = f"127.0.0.1:{closed_port()}"
    args = {
        "coordinator": ["coordinator"],
        "worker": ["worker", "--roles", "loader", "--handlers", ETL_HANDLERS],
        "submit": ["submit", EXAMPLE],
    }[command]
    proc = installation.flowkit(*args, "--kafka", where, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: cannot reach Kafka at {where}: "), proc.stderr


def test_mongodb_not_there_is_one_line_naming_it_without_the_password(installation: Installation) -> None:
    url = f"mongodb://bob:s3cret@127.0.0.1:{closed_port()}/flowkit"
    proc = installation.flowkit("status", "some-task", "--mongo", url, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    masked = url.replace("s3cret", "***")
    assert proc.stderr.startswith(f"error: cannot reach MongoDB at {masked}: "), proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout


GATE_HANDLERS = """
import asyncio, os
from flowkit import HandlerError
from flowkit.worker.handlers.base import BatchResult, Handler


class Nap(Handler):
    async def process_batch(self, batch, ctx):
        await asyncio.sleep(batch.payload.get("sec", 0.1))
        return BatchResult(metrics={"naps": 1})


class Gate(Handler):
    async def process_batch(self, batch, ctx):
        if os.path.exists(os.environ["GATE_CLOSED"]):
            raise HandlerError("gate_closed", "the gate file exists", permanent=True)
        return BatchResult(metrics={"passed": 1})


HANDLERS = {"nap": Nap(), "gate": Gate()}
"""
GATE_GRAPH = (
    "nodes:\n  - {node_id: first, type: nap, io: {input_inline: {sec: 5}}}\n"
    "  - {node_id: second, type: gate, depends_on: [first]}\n"
    "  - {node_id: third, type: nap, depends_on: [second]}\n"
)


def test_suspend_resume_retry_and_delete_from_the_command_line(
    installation: Installation, tmp_path: Path
) -> None:
    folder = tmp_path / "gate"
    folder.mkdir()
    (folder / "cli_gate_handlers.py").write_text(GATE_HANDLERS)
    (folder / "gate.yaml").write_text(GATE_GRAPH)
    closed = folder / "closed"
    closed.touch()
    installation.env["GATE_CLOSED"] = str(closed)
    installation.coordinator("c1")
    installation.worker("w1", "nap,gate", "cli_gate_handlers:HANDLERS", cwd=folder)
    task_id = installation.flowkit("submit", str(folder / "gate.yaml")).stdout.strip()
    node = lambda nid: installation.status(task_id)["nodes"][nid]  # noqa: E731
    wait_for(lambda: node("first")["status"] == "running", 30, "first to run", installation.all_logs)

    suspended = installation.flowkit("suspend", task_id)
    assert suspended.returncode == 0, suspended.stderr
    assert f"suspend requested: task {task_id} starts no new node" in suspended.stdout
    wait_for(lambda: node("first")["status"] == "finished", 30, "first to finish", installation.all_logs)
    held = installation.status(task_id)
    assert (held["status"], held["nodes"]["second"]["attempts"]) == ("running", 0)

    assert installation.flowkit("resume", task_id).returncode == 0
    failed = installation.flowkit("watch", task_id, "--json", timeout=60)
    assert failed.returncode == 1, installation.all_logs()
    assert json.loads(failed.stdout)["nodes"]["second"]["error"]["code"] == "gate_closed"

    closed.unlink()
    retried = installation.flowkit("retry", task_id)
    assert retried.returncode == 0, retried.stderr
    assert "2 node(s) run again (second, third)" in retried.stdout
    finished = installation.flowkit("watch", task_id, "--json", timeout=60)
    assert finished.returncode == 0, f"{finished.stdout}\n{installation.all_logs()}"
    final = json.loads(finished.stdout)["nodes"]
    assert (final["first"]["attempts"], final["second"]["attempts"], final["third"]["status"]) == (
        1,
        2,
        "finished",
    )
    again = installation.flowkit("retry", task_id)
    assert (
        again.returncode == 2
        and "is finished: only a failed or cancelled task can be retried" in again.stderr
    )

    assert installation.flowkit("delete", task_id).stdout.strip() == f"task {task_id} deleted"
    gone = installation.flowkit("status", task_id)
    assert gone.returncode == 2 and task_id in gone.stderr

    running = installation.flowkit("submit", str(folder / "gate.yaml")).stdout.strip()
    refused = installation.flowkit("delete", running)
    assert refused.returncode == 2 and "cancel it first, or delete with --cancel" in refused.stderr
    deleted = installation.flowkit("delete", running, "--cancel")
    assert deleted.returncode == 0, deleted.stderr
    assert installation.flowkit("status", running).returncode == 2
    assert installation.terminate("w1") == 0
    assert installation.terminate("c1") == 0


def probe(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path: (status, body); (0, why) when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError as exc:
        return 0, str(exc)


def test_a_worker_answers_its_probes_and_is_not_ready_while_draining(
    installation: Installation, slow_handlers: Path
) -> None:
    port = closed_port()
    installation.env["FLOWKIT_WORKER_HEALTH_HOST"] = "127.0.0.1"  # a host process: loopback only
    installation.coordinator("c1")
    args = [
        "--id",
        "w1",
        "--roles",
        "slow",
        "--handlers",
        "cli_slow_handlers:HANDLERS",
        "--health-port",
        str(port),
    ]
    installation.start("w1", "worker", *args, cwd=slow_handlers)
    installation.wait_running("w1")
    assert probe(port, "/healthz") == (200, "ok")
    assert probe(port, "/readyz") == (200, "ok")
    assert probe(port, "/metrics")[0] == 404
    submit_slow_and_wait_running(installation, slow_handlers)
    installation.procs["w1"].send_signal(signal.SIGTERM)  # drains: the slow run holds it
    wait_for(
        lambda: probe(port, "/readyz") == (503, "draining"),
        10,
        "readyz to say draining",
        installation.all_logs,
    )
    assert probe(port, "/healthz") == (200, "ok")  # draining is alive
    assert installation.procs["w1"].wait(60) == 0
    assert probe(port, "/healthz")[0] == 0  # gone with the process
