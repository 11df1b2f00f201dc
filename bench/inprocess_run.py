"""One in-process peer measurement, run in the peers' virtualenv by ``inprocess_peers.py``.

    bench/.peers-venv/bin/python bench/inprocess_run.py prefect|dagster chain|fan N RESULT_FD

Imports ``<peer>_shapes``, runs its warm-up, waits for the processes the peer started
(Prefect's temporary API server) to go quiet, then times one run of the shape: the
start-up is off the clock, as the embedded runtime's and the Celery worker's are. It
writes JSON lines to the file descriptor RESULT_FD: ``{"note": ...}`` as it goes (the
bench shows them, and names the last one in a timeout), then ``{"figures": {...}}`` or
``{"error": ...}``. The figures are named as ``shapes.py`` names them, so the report
sets them beside FlowKit's:

- ``ms_per_node`` (the fan also ``nodes_per_s``, over its N + 2 nodes): wall clock;
- ``one_node_run_ms``: a run of one node, timed just before (after the warm-up): what
  a run costs whatever its size (Prefect's is about 1 s, see ``prefect_shapes.py``);
- whatever the peer's run adds (Prefect: ``in_flow_ms_per_node``);
- ``process_cpu_s``: this process's CPU seconds during the timed run;
- ``process_peak_rss_mb``: this process's peak RSS, imports included (as embedded's);
- ``server_cpu_s``, ``server_peak_rss_mb``: the same for this process's children
  (Prefect's server), when it has any.

Only the standard library besides the peer: FlowKit is not installed in that virtualenv.
SIGTERM (the bench's timeout) exits through ``SystemExit``, so the peer's exit
handlers run (Prefect stops its server) and nothing is left behind.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

SETTLE_SEC = 60.0
"""How long the peer's own processes may stay busy after the warm-up; past it, the run starts anyway."""
QUIET_CPU_S = 0.05
"""CPU seconds the children may use in half a second and still count as quiet."""


def children() -> list[int]:
    """This process's child processes (from /proc: no psutil in the peers' virtualenv)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended while we looked
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def cpu_s(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has ended
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def settle() -> None:
    """Wait (within ``SETTLE_SEC``) until this process's children use next to no CPU."""
    deadline = time.monotonic() + SETTLE_SEC
    before = cpu_s(children())
    while children() and time.monotonic() < deadline:
        time.sleep(0.5)  # nothing to wait on but the children's CPU counters
        now = cpu_s(children())
        if now - before < QUIET_CPU_S:
            return
        before = now


def _timed(run: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    """Seconds ``run`` took, and the figures of its own it gave."""
    started = time.perf_counter()
    own = run()
    return time.perf_counter() - started, own


def measure(peer: str, shape: str, size: int, say: Callable[..., None]) -> dict[str, float]:
    say(note=f"importing {peer}")
    module = importlib.import_module(f"{peer}_shapes")
    say(note="warming up")
    module.warm_up()
    say(note="waiting for the peer's processes to go quiet")
    settle()
    one_node_ms = _timed(module.prepare("chain", 1))[0] * 1000
    settle()
    run = module.prepare(shape, size)
    say(note=f"running {shape} N={size:,}")
    servers = children()
    server_cpu, cpu = cpu_s(servers), time.process_time()
    elapsed, own = _timed(run)
    nodes = size if shape == "chain" else size + 2
    figures = {"ms_per_node": elapsed * 1000 / nodes}
    if shape == "fan":
        figures["nodes_per_s"] = nodes / elapsed
    figures |= own
    figures["one_node_run_ms"] = one_node_ms
    figures["process_cpu_s"] = time.process_time() - cpu
    figures["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if servers:
        figures["server_cpu_s"] = cpu_s(servers) - server_cpu
        figures["server_peak_rss_mb"] = sum(peak_rss_mb(pid) for pid in servers)
    return figures


def _exit(signum: int, frame: object) -> NoReturn:
    sys.exit(128 + signum)


def main() -> None:
    peer, shape, size, result_fd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    signal.signal(signal.SIGTERM, _exit)
    os.set_inheritable(result_fd, False)  # the peer's own processes must not hold it open
    with os.fdopen(result_fd, "w", buffering=1) as out:

        def say(**message: Any) -> None:
            out.write(json.dumps(message) + "\n")

        try:
            figures = measure(peer, shape, size, say)
        except Exception as exc:  # the reason for the table; the traceback goes to the log
            say(error=f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
            raise
        say(figures=figures)


if __name__ == "__main__":
    main()
