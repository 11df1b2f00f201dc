"""Coordinators and workers as real OS processes (``flowkit coordinator`` / ``flowkit worker``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
HANDLERS = "tests.integration.faults.handlers:HANDLERS"

# Short leases and intervals, so that losses are noticed in seconds.
FAST = {
    "FLOWKIT_WORKER_HB_INTERVAL_SEC": "0.5",
    "FLOWKIT_WORKER_LEASE_TTL_SEC": "3",
    "FLOWKIT_WORKER_DB_CANCEL_POLL_MS": "300",
    "FLOWKIT_WORKER_ANNOUNCE_INTERVAL_SEC": "2",
    "FLOWKIT_WORKER_DRAIN_TIMEOUT_SEC": "1",
    "FLOWKIT_COORDINATOR_TASK_LEASE_SEC": "3",
    "FLOWKIT_COORDINATOR_ADOPT_INTERVAL_SEC": "0.5",
    "FLOWKIT_COORDINATOR_WORKER_LEASE_TTL_SEC": "3",
    "FLOWKIT_COORDINATOR_LEASE_CHECK_INTERVAL_SEC": "0.5",
    "FLOWKIT_COORDINATOR_ACCEPT_TIMEOUT_SEC": "5",
}


@dataclass
class Processes:
    """Starts, kills and reaps the processes of one test, each with its log file."""

    kafka: str
    mongo_url: str
    prefix: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            **FAST,
            "FLOWKIT_KAFKA_BOOTSTRAP": self.kafka,
            "FLOWKIT_MONGO_URL": self.mongo_url,
            "FLOWKIT_TOPIC_PREFIX": self.prefix,
            "PYTHONPATH": str(REPO),
        }

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowkit.cli", *args],
            cwd=REPO,
            env=self._env(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        return proc

    def coordinator(self, name: str) -> subprocess.Popen[bytes]:
        return self._start(name, ["coordinator", "--id", name, "-v"])

    def worker(self, name: str, roles: str = "source,sink", capacity: int = 2) -> subprocess.Popen[bytes]:
        args = ["worker", "--id", name, "--roles", roles, "--handlers", HANDLERS, "--capacity", str(capacity)]
        return self._start(name, [*args, "-v"])

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no cleanup."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def terminate(self, name: str, timeout: float = 30) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not exit within {timeout}s of SIGTERM\n{self.log(name)}")
            await asyncio.sleep(0.05)
        return proc.returncode

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.procs)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None


def pid_of(procs: Processes, worker_id: str | None) -> Any:
    return procs.procs.get(worker_id or "")
