"""The operator in-process (its own thread and event loop) and `flowkit worker` processes,
for the operator tests; FlowTask manifests and waiting helpers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowkit_operator.app import Operator, run
from flowkit_operator.config import OperatorConfig

from flowkit.config import CoordinatorConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAST_COORDINATOR = {"lease_check_interval_sec": 0.5, "adopt_interval_sec": 0.5, "task_lease_sec": 5.0}
FAST_WORKER_ENV = {
    "FLOWKIT_WORKER_HB_INTERVAL_SEC": "0.5",
    "FLOWKIT_WORKER_DB_CANCEL_POLL_MS": "200",
    "FLOWKIT_WORKER_PULL_POLL_MS_DEFAULT": "200",
}


class OperatorThread:
    """``flowkit_operator.app.run`` in a thread: start() returns once kopf is ready."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.parts: Operator | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float = 60) -> OperatorThread:
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise AssertionError(f"the operator did not become ready in {timeout}s (error: {self.error!r})")
        if self.error is not None:
            raise AssertionError(f"the operator failed to start: {self.error!r}")
        return self

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            ready = asyncio.Event()

            def started(parts: Operator) -> None:
                self.parts = parts

            async def tell_ready() -> None:
                await ready.wait()
                self._started.set()

            watcher = asyncio.create_task(tell_ready())
            try:
                await run(self.cfg, stop_flag=self._stop, ready=ready, on_started=started)
            finally:
                watcher.cancel()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def call(self, fn: Callable[[Operator], Any], timeout: float = 30) -> Any:
        """Run ``fn(parts)`` (a coroutine function or not) on the operator's loop; return its result."""
        assert self.loop is not None and self.parts is not None

        async def go() -> Any:
            assert self.parts is not None
            result = fn(self.parts)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout)

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"the operator did not stop within {timeout}s")
        self._thread = None


def operator_config(
    *, kafka: str, mongo_url: str, prefix: str, namespace: str, **extra: Any
) -> OperatorConfig:
    coordinator = CoordinatorConfig(
        kafka_bootstrap=kafka, mongo_url=mongo_url, topic_prefix=prefix, **FAST_COORDINATOR
    )
    return OperatorConfig(
        coordinator=coordinator,
        namespaces=(namespace,),
        health_port=0,
        health_host="127.0.0.1",  # a host process: loopback only
        status_interval_sec=0.5,
        sweep_interval_sec=2.0,
        **extra,
    )


class WorkerProcess:
    """A real `flowkit worker` for the roles of operator_handlers.HANDLERS."""

    def __init__(self, *, kafka: str, mongo_url: str, prefix: str, roles: str = "quick,slow,gate") -> None:
        env = {
            **os.environ,
            **FAST_WORKER_ENV,
            "FLOWKIT_KAFKA_BOOTSTRAP": kafka,
            "FLOWKIT_MONGO_URL": mongo_url,
            "FLOWKIT_TOPIC_PREFIX": prefix,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        flowkit = Path(sys.executable).with_name("flowkit")
        self.proc = subprocess.Popen(
            [
                str(flowkit),
                "worker",
                "--roles",
                roles,
                "--handlers",
                "operator_handlers:HANDLERS",
                "--capacity",
                "8",
            ],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stdout.read() if self.proc.stdout else ""


def flowtask(name: str, nodes: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flowkit.io/v1alpha1",
        "kind": "FlowTask",
        "metadata": {"name": name},
        "spec": {"graph": {"nodes": nodes}, **spec},
    }


def node(node_id: str, role: str, depends_on: list[str] | None = None, **inline: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"node_id": node_id, "type": role, "io": {"input_inline": inline}}
    if depends_on:
        out["depends_on"] = depends_on
    return out


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def events_of(kubectl: Any, name: str) -> list[dict[str, Any]]:
    out = kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return list(json.loads(out)["items"])


def reasons(kubectl: Any, name: str) -> list[str]:
    return [
        e["reason"] for e in sorted(events_of(kubectl, name), key=lambda e: e.get("firstTimestamp") or "")
    ]
