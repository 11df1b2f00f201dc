"""Prefect 3.9 and Dagster 1.13 running the chain and fan shapes in-process, beside FlowKit embedded.

Both are installed, pinned (``REQUIREMENTS``), into a virtualenv of their own,
``bench/.peers-venv`` (git-ignored), made on first use: their dependency trees
(pydantic, SQLAlchemy, …) need not agree with FlowKit's. Each measurement runs as
``inprocess_run.py`` on that virtualenv's python, started by :func:`run_in_venv`
inside a process of ``isolate.measure``: it has the bench's deadline, its progress
notes reach the bench, and its whole process tree is ended after it. What each peer
runs, and on which executor: ``prefect_shapes.py``, ``dagster_shapes.py``.

The measuring process's environment is the bench's less every ``PREFECT_*`` and
``DAGSTER_*`` variable (so a user's profile, API URL or instance cannot leak in), plus:

Prefect
    ``PREFECT_HOME`` a temporary directory (profiles, local storage, the database: nothing
    in the user's home); ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` (the newer name of
    ``PREFECT_API_DATABASE_CONNECTION_URL``) SQLite in that directory, which is where
    the default points too, set so that it cannot be anywhere else;
    ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` and ``DO_NOT_TRACK=1``: no usage events
    sent out (this machine reaches no analytics service, and sending them is not
    orchestration work). Nothing else: logging stays at its
    defaults (INFO to the console, and task run logs sent to the API, as a user's run
    does), only the console is this measurement's log file.
Dagster
    ``DAGSTER_HOME`` a temporary directory. The runs use ``DagsterInstance.ephemeral()``,
    which keeps everything in memory and sends no telemetry, so nothing else is needed.

The temporary directory is removed after each measurement; the measuring process's
output is in ``logs/peers/<peer>-<shape>-<N>.log``, pip's in ``logs/peers-pip.log``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from isolate import Figures, note
from records import DAGSTER, PREFECT

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".peers-venv"
REQUIREMENTS = ("prefect==3.9.*", "dagster==1.13.*")
SHAPES = ("chain", "fan")
"""The shapes the peers run: the issue's lead is per node on these two (streaming has no
equivalent, see peer.py)."""


def _prefect_settings(home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def _dagster_settings(home: Path) -> dict[str, str]:
    return {"DAGSTER_HOME": str(home)}


@dataclass(frozen=True)
class Peer:
    name: str
    """What ``inprocess_run.py`` is told: it runs ``<name>_shapes.py``."""
    runtime: str
    """The report's row."""
    settings: Callable[[Path], dict[str, str]]
    """The environment of a measurement, given its temporary directory."""


PEERS = (Peer("prefect", PREFECT, _prefect_settings), Peer("dagster", DAGSTER, _dagster_settings))


def peers_python(logs: Path) -> Path:
    """The peers' virtualenv's python: made, and the peers installed, on first use (and
    again when ``REQUIREMENTS`` change); raises RuntimeError naming the log if pip fails."""
    python, stamp = VENV / "bin" / "python", VENV / "bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "peers-pip.log"
    print(
        f"bench: installing {' and '.join(REQUIREMENTS)} into {VENV} "
        f"(once, a few minutes; pip's output in {log_path})",
        file=sys.stderr,
    )
    started = time.monotonic()
    with open(log_path, "ab") as log:

        def step(argv: list[str]) -> None:
            if subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
                command = shlex.join(argv)
                raise RuntimeError(f"could not install the peers: {command} failed (log: {log_path})")

        if not python.exists():
            step([sys.executable, "-m", "venv", str(VENV)])
        step([str(python), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS])
    stamp.write_text(wanted)
    print(f"bench: peers installed in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return python


def versions(python: Path) -> str:
    """The installed versions, e.g. "prefect 3.9.1, dagster 1.13.29"."""
    script = (
        "import importlib.metadata as m, sys; print(', '.join(p + ' ' + m.version(p) for p in sys.argv[1:]))"
    )
    argv = [str(python), "-c", script, *(p.name for p in PEERS)]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def run_in_venv(peer: str, shape: str, size: int, python: str, logs: str) -> Figures:
    """One measurement of ``peer`` (``inprocess_run.py`` on the peers' ``python``), its notes
    passed on; run by ``isolate.measure``, whose SIGTERM is passed on to it too."""
    settings = next(p.settings for p in PEERS if p.name == peer)
    log_path = Path(logs) / "peers" / f"{peer}-{shape}-{size}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DAGSTER_"))}
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryDirectory(prefix=f"flowkit-bench-{peer}-") as home, open(log_path, "ab") as log:
        process = subprocess.Popen(
            [python, str(BENCH_DIR / "inprocess_run.py"), peer, shape, str(size), str(write_fd)],
            cwd=BENCH_DIR,
            env=inherited | settings(Path(home)),
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        # Stopped by the bench: the peer exits through its own handlers (Prefect stops its
        # server) before the temporary directory goes.
        signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
        try:
            figures = _follow(read_fd)
        finally:
            code = process.wait()
    if figures is None:
        raise RuntimeError(f"{peer} exited with {code}: {_last_line(log_path)} (log: {log_path})")
    return figures


def _follow(fd: int) -> Figures | None:
    """The measurement's figures from its result pipe, its notes passed on as they come;
    None if it ended without either figures or an error."""
    with os.fdopen(fd) as lines:
        for line in lines:
            message = json.loads(line)
            if "figures" in message:
                return {k: float(v) for k, v in message["figures"].items()}
            if "error" in message:
                raise RuntimeError(message["error"])
            note(message["note"])
    return None


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
