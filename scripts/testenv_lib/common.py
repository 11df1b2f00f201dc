"""Shared plumbing for scripts/testenv: paths, daemons, ports, state, errors.

Standard library only: a fresh machine runs this before anything is installed.
Every service module (kafka.py, ferretdb.py, cluster/...) builds on these helpers
so that pid files, logs and error messages look the same everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The pod network's gateway address: held on the host (on the bridge the script
# creates) so that host-side services listening on it are reachable from pods too.
POD_CIDR = "10.244.0.0/24"
POD_RANGE_BLACKHOLE = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
HOST_IP = "10.244.0.1"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
# The bridge the script creates first and the CNI bridge plugin then reuses.
BRIDGE = "flowkit0"


class TestenvError(Exception):
    """A service could not be set up; the message names what is missing."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        self.log = log
        if log is not None:
            message = f"{message}\n--- last lines of {log} ---\n{log_tail(log)}"
        super().__init__(message)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Context:
    """Where things live. Cache survives `down`; the run directory is per `up`."""

    cache: Path
    run: Path
    verbose: bool = False
    _state: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Context:
        cache = Path(os.environ.get("FLOWKIT_TESTENV_CACHE", Path.home() / ".cache" / "flowkit-testenv"))
        run = Path(os.environ.get("FLOWKIT_TESTENV_RUN", cache / "run"))
        cache.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        ctx = cls(cache=cache, run=run)
        ctx.load_state()
        return ctx

    # -- persisted state (ports, flags) shared between up/down/status/env --
    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    def load_state(self) -> None:
        try:
            self._state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            self._state = {}

    def get(self, key: str, default: object = None) -> object:
        return self._state.get(key, default)

    def put(self, key: str, value: object) -> None:
        self._update({key: value}, ())

    def forget(self, *keys: str) -> None:
        self._update({}, keys)

    def _update(self, values: Mapping[str, object], removed: Sequence[str]) -> None:
        # Re-read under a lock: another `scripts/testenv` (a shell's `up cluster` while
        # pytest runs `up kafka`) may have written its own keys since we loaded.
        with self.state_file.with_suffix(".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.load_state()
            self._state.update(values)
            for key in removed:
                self._state.pop(key, None)
            tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True))
            tmp.replace(self.state_file)

    def logfile(self, name: str) -> Path:
        (self.run / "logs").mkdir(parents=True, exist_ok=True)
        return self.run / "logs" / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        (self.run / "pids").mkdir(parents=True, exist_ok=True)
        return self.run / "pids" / f"{name}.pid"

    @property
    def bin_dir(self) -> Path:
        """Symlinks to the tools (helm, kubectl); `env` puts this directory on PATH."""
        return self.run / "bin"


def link_bin(ctx: Context, name: str, target: Path) -> None:
    """Expose `target` as `name` in ctx.bin_dir (replacing an older link)."""
    ctx.bin_dir.mkdir(parents=True, exist_ok=True)
    link = ctx.bin_dir / name
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.readlink() == target:
            return
        link.unlink()
    link.symlink_to(target)


def unlink_bin(ctx: Context, name: str) -> None:
    (ctx.bin_dir / name).unlink(missing_ok=True)


@contextlib.contextmanager
def cache_lock(ctx: Context, name: str) -> Iterator[None]:
    """Serialise installs of `name` into the cache across concurrent `up`s."""
    (ctx.cache / "locks").mkdir(parents=True, exist_ok=True)
    with (ctx.cache / "locks" / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(ctx: Context, target: Path, lock: str, make: Callable[[Path], None]) -> Path:
    """`target` in the cache, made by `make(target)` the first time only; concurrent
    `up`s wait for the one making it (`make` must leave it complete or not at all)."""
    if not target.exists():
        with cache_lock(ctx, lock):
            if not target.exists():
                make(target)
    return target


def say(message: str) -> None:
    """Progress for a person, on stderr (stdout is reserved for `env`)."""
    import sys

    print(f"testenv: {message}", file=sys.stderr, flush=True)


def require_tool(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise TestenvError(f"{tool} not found on PATH: {hint}")
    return path


def require_disk(path: Path, gib: float, what: str) -> None:
    free = shutil.disk_usage(path).free / 2**30
    if free < gib:
        raise TestenvError(f"{what} needs {gib:.1f} GiB free under {path}, only {free:.1f} GiB left")


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; output goes to `log` (appended) or is captured.

    A command that runs long (a cold build) says every 30 s that it is still going.
    """
    full_env = {**os.environ, **(env or {})}
    with _still_running(argv, log):
        proc = _run_to_end(argv, log, cwd, full_env, timeout)
    if check and proc.returncode != 0:
        detail = "" if log is not None else f"\n{proc.stdout}{proc.stderr}"
        raise TestenvError(f"command failed ({proc.returncode}): {' '.join(argv)}{detail}", log)
    return proc


@contextlib.contextmanager
def _still_running(argv: Sequence[str], log: Path | None, every: float = 30.0) -> Iterator[None]:
    done = threading.Event()
    started = time.monotonic()
    what = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:3]))

    def report() -> None:
        while not done.wait(every):
            minutes, seconds = divmod(int(time.monotonic() - started), 60)
            where = f"; log: {log}" if log is not None else ""
            say(f"still running {what} ... ({minutes}m{seconds:02d}s{where})")

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _run_to_end(
    argv: Sequence[str], log: Path | None, cwd: Path | None, full_env: dict[str, str], timeout: float | None
) -> subprocess.CompletedProcess[str]:
    if log is not None:
        with log.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
    else:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    return proc


def debian_packages_missing(packages: Sequence[str]) -> list[str]:
    missing = []
    for package in packages:
        proc = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
        if proc.returncode != 0 or not proc.stdout.endswith(" installed"):
            missing.append(package)
    return missing


def ensure_debian_packages(ctx: Context, packages: Sequence[str], why: str) -> None:
    """Install the missing ones with apt-get (a fresh machine has none of them).

    Tries the current package lists first and runs `apt-get update` once if that fails.
    """
    missing = debian_packages_missing(packages)
    if not missing:
        return
    require_tool("apt-get", f"install the Debian packages {' '.join(missing)} ({why}) by hand")
    log = ctx.logfile("apt")
    say(f"installing Debian packages {' '.join(missing)} ({why}); log: {log}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(install, log=log, env=env, check=False).returncode != 0:
        run(["apt-get", "update", "-q"], log=log, env=env, check=False)
        if run(install, log=log, env=env, check=False).returncode != 0:
            raise TestenvError(
                f"could not install the Debian packages {' '.join(missing)} ({why}); "
                f"try `apt-get update && apt-get install {' '.join(missing)}` by hand",
                log,
            )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path | None = None,
    pid_name: str | None = None,
    ctx: Context | None = None,
) -> None:
    """Poll `check` until true; fail early (with the log tail) if the daemon died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid_name is not None and ctx is not None and not daemon_alive(ctx, pid_name):
            raise TestenvError(f"{what}: the process exited during start-up", log)
        time.sleep(0.2)
    raise TestenvError(f"{what}: not ready after {timeout:.0f}s", log)


def start_daemon(
    ctx: Context,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a background process in its own session, logging to logs/<name>.log."""
    if daemon_alive(ctx, name):
        return int(ctx.pidfile(name).read_text())
    log = ctx.logfile(name)
    out = log.open("a")
    out.write(f"\n$ {' '.join(argv)}\n")
    out.flush()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    ctx.pidfile(name).write_text(str(proc.pid))
    return proc.pid


def _pid_of(ctx: Context, name: str) -> int | None:
    try:
        return int(ctx.pidfile(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_of(ctx: Context, name: str) -> int | None:
    """The pid recorded for daemon `name` (it may be stale: see daemon_alive)."""
    return _pid_of(ctx, name)


def cmdline(pid: int) -> str:
    """The command line of `pid`, space-joined ("" if it is gone)."""
    return _cmdline(pid)


def daemon_alive(ctx: Context, name: str) -> bool:
    pid = _pid_of(ctx, name)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stale pid file from a killed run may point at a reused pid: check it is ours.
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.read_text().split()[2] == "Z":
            return False
    except OSError:
        return False
    # Right after fork/exec the command line reads empty for a moment; a kernel thread
    # (a reused pid) has none at all.
    for _ in range(20):
        if _cmdline(pid):
            return True
        time.sleep(0.02)
    return False


def stop_daemon(ctx: Context, name: str, timeout: float = 15.0) -> None:
    """SIGTERM the daemon's process group, then SIGKILL after `timeout`."""
    pid = _pid_of(ctx, name)
    if pid is not None and daemon_alive(ctx, name):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and daemon_alive(ctx, name):
            time.sleep(0.1)
        if daemon_alive(ctx, name):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and daemon_alive(ctx, name):
                time.sleep(0.1)
    ctx.pidfile(name).unlink(missing_ok=True)


def crash_daemon(ctx: Context, name: str, timeout: float = 10.0) -> None:
    """SIGKILL the daemon's process group, as a crash would (no clean shutdown), and wait."""
    pid = _pid_of(ctx, name)
    if pid is None or not daemon_alive(ctx, name):
        raise TestenvError(f"{name} is not running")
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon_alive(ctx, name):
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_stray(pattern: str) -> None:
    """Kill processes whose command line contains `pattern` (leftovers of a killed run)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        if pattern in _cmdline(int(entry.name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
