"""The peer: Celery 5 with Redis running the same shapes as FlowKit.

Debian's ``redis-server`` is started on loopback, on a free port, with a directory of
its own and no persistence; a Celery worker (prefork, one child per core) runs as its
own process, as users deploy it. Both are stopped at the end, whatever happened.

Shapes: the chain is ``chain(noop.si() x N)``; the fan-out + fan-in is
``chain(noop.si(), chord(group(noop.si() x N), noop.si()))`` (root, N, sink: the same
N + 2 nodes as FlowKit's); the scale shape is 200 chains of 20 submitted at once.
Streaming has no fair equivalent: a Celery task cannot hand batches to a running
downstream task, so "stage 2 starts on stage 1's first batch" would be N separate
tasks per stage (that is the fan-out shape again), or a user-built queue between
long-running tasks (not Celery's machinery).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from distributed import peak_rss_mb
from isolate import MeasurementError, measure
from shapes import SCALE_NODES

BENCH_DIR = Path(__file__).resolve().parent
CELERY = str(Path(sys.executable).with_name("celery"))
START_TIMEOUT_SEC = 60.0
RESULT_TIMEOUT_SEC = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _install_redis(logs: Path) -> str:
    """Debian's redis-server, installed once (a fresh machine has none); it is not started
    as a service here (no init system), only by :func:`redis_server`."""
    if shutil.which("apt-get") is None:
        raise RuntimeError("redis-server not found and no apt-get to install it: install Redis 7")
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    with open(logs / "apt.log", "ab") as log:
        print("bench: installing Debian's redis-server (once)", file=sys.stderr)

        def apt(argv: list[str]) -> int:
            return subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode

        status = apt(install)
        if status != 0:  # stale package lists: refresh them once
            apt(["apt-get", "update", "-q"])
            status = apt(install)
    binary = shutil.which("redis-server")
    if status != 0 or binary is None:
        raise RuntimeError(f"could not install redis-server with apt-get (log: {logs / 'apt.log'})")
    return binary


@contextmanager
def redis_server(logs: Path) -> Iterator[str]:
    """A private redis-server on 127.0.0.1; yields its URL."""
    binary = shutil.which("redis-server") or _install_redis(logs)
    port, workdir = free_port(), tempfile.mkdtemp(prefix="flowkit-bench-redis-")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
               "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "redis.log", "wb") as log:
        # A session of its own: Ctrl-C reaches the bench, which stops it after the worker.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SEC
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # the server is starting: nothing to wait on but the port
    raise RuntimeError(f"redis-server did not listen on port {port} within {START_TIMEOUT_SEC}s")


@contextmanager
def celery_worker(url: str, logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {"BENCH_REDIS_URL": url}
    command = [CELERY, "-A", "celery_app", "worker", "--pool", "prefork",
               "--concurrency", str(os.cpu_count() or 2), "--loglevel", "WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    with open(logs / "celery-worker.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=BENCH_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        _stop(process, signal.SIGQUIT)  # cold shutdown: nothing is left to drain


def _usage(process: subprocess.Popen[bytes], cpu_start: float) -> dict[str, float]:
    """CPU seconds and summed peak RSS of the worker and its prefork children."""
    parent = psutil.Process(process.pid)
    family = [parent, *parent.children(recursive=True)]
    return {
        "worker_cpu_s": _cpu(family) - cpu_start,
        "worker_peak_rss_mb": sum(peak_rss_mb(p.pid) for p in family),
    }


def _cpu(family: list[psutil.Process]) -> float:
    return sum(float(t.user + t.system) for t in (p.cpu_times() for p in family))


def celery_measure(url: str, shape: str, size: int) -> dict[str, float]:
    """One run of ``shape`` against the worker on ``url`` (run by ``isolate.measure`` in a
    process of its own, so a run that stalls can be stopped)."""
    os.environ["BENCH_REDIS_URL"] = url  # read by celery_app on import
    from celery import chain, chord, group
    from celery_app import noop

    noop.si().apply_async().get(timeout=START_TIMEOUT_SEC)  # connected before the clock starts
    if shape == "chain":
        started = time.perf_counter()
        chain(*(noop.si() for _ in range(size))).apply_async().get(timeout=RESULT_TIMEOUT_SEC)
        elapsed = time.perf_counter() - started
        return {"ms_per_node": elapsed * 1000 / size}
    if shape == "fan":
        flow = chain(noop.si(), chord(group(noop.si() for _ in range(size)), noop.si()))
        started = time.perf_counter()
        flow.apply_async().get(timeout=RESULT_TIMEOUT_SEC)
        elapsed = time.perf_counter() - started
        return {"nodes_per_s": (size + 2) / elapsed, "ms_per_node": elapsed * 1000 / (size + 2)}
    if shape == "scale":
        started = time.perf_counter()
        results = [chain(*(noop.si() for _ in range(SCALE_NODES))).apply_async() for _ in range(size)]
        for result in results:
            result.get(timeout=RESULT_TIMEOUT_SEC)
        elapsed = time.perf_counter() - started
        nodes = size * SCALE_NODES
        return {"nodes_per_s": nodes / elapsed, "ms_per_node": elapsed * 1000 / nodes}
    raise ValueError(f"no Celery equivalent of shape {shape!r}")


class CeleryPeer:
    """Redis and a Celery worker, started once for all the peer's measurements."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._stack: Any = None

    def __enter__(self) -> CeleryPeer:
        from contextlib import ExitStack

        self._stack = ExitStack()
        try:
            self.url = self._stack.enter_context(redis_server(self._logs))
            self.worker = self._stack.enter_context(celery_worker(self.url, self._logs))
            measure(_worker_up, (self.url,), START_TIMEOUT_SEC)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def measure(
        self, shape: str, size: int, timeout: float, on_note: Callable[[str], None]
    ) -> dict[str, float]:
        cpu_start = _cpu([psutil.Process(self.worker.pid), *psutil.Process(self.worker.pid).children()])
        try:
            figures = measure(celery_measure, (self.url, shape, size), timeout, on_note)
        except MeasurementError:
            self._flush()  # what the stopped run left queued must not slow the next one
            raise
        return figures | _usage(self.worker, cpu_start)

    def _flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


def _worker_up(url: str) -> dict[str, float]:
    os.environ["BENCH_REDIS_URL"] = url
    from celery_app import noop

    noop.si().apply_async().get(timeout=START_TIMEOUT_SEC)
    return {}
