"""A MongoDB wire-protocol server: FerretDB with its SQLite backend, built from Go modules.

`go install …@v1.24.0` fails here (the proxy refuses the module's version list) and a
build as a dependency of a wrapper module panics at start (no version file), so the
module is downloaded through a wrapper go.mod, copied out of the module cache,
given its build/version/version.txt and built in place (TESTENV.md). The binary is
cached per version. It listens on HOST_IP only: pods and host clients use one URL.

With FLOWKIT_TEST_MONGO_URL set, that server is used instead: nothing is built or run.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
from pathlib import Path
from urllib.parse import urlsplit

from . import golang, network
from .common import (
    HOST_IP,
    Context,
    TestenvError,
    cached,
    cmdline,
    crash_daemon,
    daemon_alive,
    free_port,
    kill_stray,
    pid_of,
    port_open,
    require_disk,
    run,
    say,
    start_daemon,
    stop_daemon,
    wait_until,
)

NAME = "ferretdb"
VERSION = "v1.24.0"
MODULE = "github.com/FerretDB/FerretDB"
URL_VARIABLE = "FLOWKIT_TEST_MONGO_URL"
START_TIMEOUT = 30.0


def external_url() -> str | None:
    return os.environ.get(URL_VARIABLE) or None


# -- build ------------------------------------------------------------------------------
def binary(ctx: Context) -> Path:
    return ctx.cache / "ferretdb" / VERSION / "ferretdb"


def install(ctx: Context) -> Path:
    """Build the binary once per version; later calls return at once."""
    return cached(ctx, binary(ctx), NAME, lambda target: _build(ctx, target))


def _build(ctx: Context, target: Path) -> None:
    go = golang.require_go(22, "building FerretDB (Debian bookworm's golang-go, 1.19, is too old)")
    require_disk(ctx.cache, 2.0, f"building FerretDB {VERSION}")
    say(f"ferretdb: building FerretDB {VERSION} from the Go module proxy (once, ~2 min)")
    log = ctx.logfile("ferretdb-build")
    # The module cache is the cluster's too; this build cache is kept.
    env = golang.go_env(ctx, ctx.cache / "go" / "build")
    work = target.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    wrapper = work / "wrapper"
    wrapper.mkdir(parents=True)
    (wrapper / "go.mod").write_text(
        f"module flowkit.test/ferretdb\n\ngo 1.22\n\nrequire {MODULE} {VERSION}\n"
    )
    module_dir = Path(golang.mod_download(go, MODULE, VERSION, wrapper, env, log)["Dir"])
    source = work / "src"
    shutil.copytree(module_dir, source)
    _make_writable(source)  # the module cache is read-only
    (source / "build" / "version" / "version.txt").write_text(VERSION + "\n")
    run(
        [go, "build", "-trimpath", "-o", str(work / "ferretdb"), "./cmd/ferretdb"],
        cwd=source,
        env=env,
        log=log,
        timeout=1800,
    )
    (work / "ferretdb").replace(target)
    shutil.rmtree(work, ignore_errors=True)


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


# -- readiness: a `hello` over the wire ---------------------------------------------------
def _bson_hello() -> bytes:
    elements = b"\x10hello\x00" + struct.pack("<i", 1)
    elements += b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", len(elements) + 5) + elements + b"\x00"


def answers_hello(host: str, port: int) -> bool:
    """True when the server answers an OP_MSG `hello` with ok: 1."""
    body = struct.pack("<I", 0) + b"\x00" + _bson_hello()
    message = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(message)
            data = b""
            while len(data) < 4 or len(data) < struct.unpack_from("<i", data)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    marker = b"\x01ok\x00"
    at = data.find(marker)
    return at >= 0 and struct.unpack_from("<d", data, at + len(marker))[0] == 1.0


# -- the server ------------------------------------------------------------------------
def _home(ctx: Context) -> Path:
    return ctx.run / "ferretdb"


def _port(ctx: Context) -> int | None:
    port = ctx.get("ferretdb.port")
    return int(port) if isinstance(port, int) else None


def _running(ctx: Context) -> bool:
    pid = pid_of(ctx, NAME)
    return daemon_alive(ctx, NAME) and pid is not None and "ferretdb" in cmdline(pid)


def url(ctx: Context) -> str | None:
    port = _port(ctx)
    return f"mongodb://{HOST_IP}:{port}/" if port is not None else None


def check_external(address: str) -> None:
    """A plain mongodb:// URL must reach a listening server (other schemes are trusted)."""
    parts = urlsplit(address)
    if parts.scheme != "mongodb":
        return
    hosts = parts.netloc.rpartition("@")[2].split(",")
    for host in hosts:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if port_open(name or host, int(port or 27017), timeout=3):
            return
    raise TestenvError(f"{URL_VARIABLE}={address}: no server answers at {', '.join(hosts)}")


def up(ctx: Context) -> None:
    external = external_url()
    if external:
        check_external(external)
        return
    network.ensure(ctx)
    exe = install(ctx)
    port = _port(ctx)
    if _running(ctx) and port is not None and answers_hello(HOST_IP, port):
        return
    home = _home(ctx)
    stop_daemon(ctx, NAME)
    kill_stray(str(home / "data"))  # a server of a killed run whose pid file was lost
    # Each start is a fresh, empty server (tests use fresh database names anyway).
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    port = free_port(HOST_IP)
    ctx.put("ferretdb.port", port)
    _start(ctx, exe, home, port)


def _start(ctx: Context, exe: Path, home: Path, port: int) -> None:
    argv = [
        str(exe),
        "--handler=sqlite",
        f"--sqlite-url=file:{home / 'data'}/",
        f"--listen-addr={HOST_IP}:{port}",
        "--telemetry=disable",
        f"--state-dir={home}",
        "--debug-addr=-",
        "--log-level=info",
    ]
    start_daemon(ctx, NAME, argv, cwd=home)
    wait_until(
        lambda: answers_hello(HOST_IP, port),
        START_TIMEOUT,
        f"FerretDB on {HOST_IP}:{port}",
        ctx.logfile(NAME),
        NAME,
        ctx,
    )


def restart(ctx: Context) -> None:
    """Kill the server as a crash would, then start it again on the same address and data."""
    port = _port(ctx)
    if external_url() or port is None or not _running(ctx):
        raise TestenvError("no FerretDB of ours is running: `scripts/testenv up ferretdb` first")
    crash_daemon(ctx, NAME)
    _start(ctx, install(ctx), _home(ctx), port)


def down(ctx: Context) -> None:
    if _port(ctx) is None and not _running(ctx):
        return
    stop_daemon(ctx, NAME)
    kill_stray(str(_home(ctx) / "data"))
    shutil.rmtree(_home(ctx), ignore_errors=True)
    ctx.forget("ferretdb.port")


def status(ctx: Context) -> str:
    external = external_url()
    if external:
        return f"external server {external} ({URL_VARIABLE})"
    port = _port(ctx)
    if not _running(ctx) or port is None:
        return "stopped"
    state = "ready" if answers_hello(HOST_IP, port) else "NOT ANSWERING"
    return f"{state}, pid {pid_of(ctx, NAME)}, {url(ctx)}"


def env(ctx: Context) -> dict[str, str]:
    external = external_url()
    if external:
        return {URL_VARIABLE: external}
    address = url(ctx)
    return {URL_VARIABLE: address} if address and _running(ctx) else {}
