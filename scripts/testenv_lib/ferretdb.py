"""A MongoDB wire-protocol server: FerretDB with its SQLite backend, built from Go modules.

`go install …@v1.24.0` fails here (the proxy refuses the module's version list) and a
build as a dependency of a wrapper module panics at start (no version file), so the
module is downloaded through a wrapper go.mod, copied out of the module cache,
given its build/version/version.txt and built in place (TESTENV.md). The binary is
cached per version. FerretDB 1.24 takes one TCP listen address: it listens on
127.0.0.1 for host clients (FLOWKIT_TEST_MONGO_URL), and Debian's socat relays HOST_IP
to it for pods (FLOWKIT_TEST_MONGO_URL_POD), so host traffic never touches the bridge.

Three things in FerretDB are changed before the build (``FIXES``), all so that a read or
write by ``_id`` is an index search, as on MongoDB:

- its SQLite backend finds, updates and deletes by ``_id`` with
  ``_ferretdb_sjson->'$._id'``, while the unique ``_id`` index it creates is on
  ``_ferretdb_sjson->"_id"``. The two mean the same value, but SQLite uses an expression
  index only for the same expression, so every write by ``_id`` scanned the whole
  collection (EXPLAIN QUERY PLAN: SCAN; an update cost 0.4 ms in a collection of 20
  documents, 7.7 ms in 5,000, 32 ms in 20,000). The fix writes the lookup the way the
  index is written (SEARCH ... USING INDEX).
- it hands the ``_id`` to SQLite only when the filter has no other field, so a
  conditional update (``{_id: x, fence: {$lte: n}}``, the store's every fenced write)
  decoded every document of the collection in Go (71 % of its CPU under the bench's
  scale shape, 0.65 s per bulk write of a task's nodes). The fix hands it down whenever
  the filter has a string or ObjectId ``_id``; FerretDB applies the whole filter to what
  comes back either way, so results are the same.
- it hands down no ``{_id: {$in: [...]}}`` at all, so reading a task's nodes, or the nodes
  a worker's slots start, in one query scanned the collection; the fix hands such a list
  of strings or ObjectIds down as ``_id IN (...)`` (an index search per id).

Stored data and indexes are unchanged, so a data directory of the released build works
with it.

With FLOWKIT_TEST_MONGO_URL set, that server is used instead: nothing is built or run
(FLOWKIT_TEST_MONGO_URL_POD, if set, is how pods reach it; else the same URL).
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
    ensure_debian_packages,
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
RELAY = "ferretdb-relay"
VERSION = "v1.24.0"
MODULE = "github.com/FerretDB/FerretDB"
URL_VARIABLE = "FLOWKIT_TEST_MONGO_URL"
POD_URL_VARIABLE = "FLOWKIT_TEST_MONGO_URL_POD"
START_TIMEOUT = 30.0
_ID_EQUALS = """\
		case string, types.ObjectID:
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
"""
_ID_IN = """\
		case *types.Document:
			in, _ := v.(*types.Document).Get("$in")
			if ids, ok := in.(*types.Array); ok && v.(*types.Document).Len() == 1 && ids.Len() > 0 {
				marks, values := make([]string, 0, ids.Len()), make([]any, 0, ids.Len())
				for i := 0; i < ids.Len(); i++ {
					switch id := must.NotFail(ids.Get(i)); id.(type) {
					case string, types.ObjectID:
						marks = append(marks, "?")
						values = append(values, string(must.NotFail(sjson.MarshalSingleValue(id))))
					}
				}
				if len(marks) == ids.Len() {
					list := strings.Join(marks, ", ")
					whereClause = fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, list)
					args = values
				}
			}
"""
FIXES = (
    (
        Path("internal/backends/sqlite/metadata/metadata.go"),
        "IDColumn = DefaultColumn + \"->'$._id'\"",
        'IDColumn = DefaultColumn + `->"_id"`',
        1,
    ),
    (  # in the query and in its explain
        Path("internal/backends/sqlite/collection.go"),
        "if params.Filter.Len() == 1 {",
        "if params.Filter.Len() >= 1 {",
        2,
    ),
    (  # in the query only (its explain still says no pushdown for $in)
        Path("internal/backends/sqlite/collection.go"),
        _ID_EQUALS,
        _ID_EQUALS.removesuffix("\t\t}\n") + _ID_IN + "\t\t}\n",
        1,
    ),
)
"""(file, the text as released, the text built, how often it occurs): see the docstring."""
BUILD = f"{VERSION}-id-in-pushdown"
"""The cached binary's name: the version and the change made to it."""


def external_url() -> str | None:
    return os.environ.get(URL_VARIABLE) or None


# -- build ------------------------------------------------------------------------------
def binary(ctx: Context) -> Path:
    return ctx.cache / "ferretdb" / BUILD / "ferretdb"


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
    _fix_id_lookup(source)
    run(
        [go, "build", "-trimpath", "-o", str(work / "ferretdb"), "./cmd/ferretdb"],
        cwd=source,
        env=env,
        log=log,
        timeout=1800,
    )
    (work / "ferretdb").replace(target)
    shutil.rmtree(work, ignore_errors=True)


def _fix_id_lookup(source: Path) -> None:
    for relative, released, fixed, count in FIXES:
        path = source / relative
        text = path.read_text()
        if text.count(released) != count:
            raise TestenvError(
                f"{path}: the _id lookup to fix is not there as expected ({released!r} x {count})"
            )
        path.write_text(text.replace(released, fixed))


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


def _port(ctx: Context, key: str = "ferretdb.port") -> int | None:
    port = ctx.get(key)
    return int(port) if isinstance(port, int) else None


def _relay_port(ctx: Context) -> int | None:
    return _port(ctx, "ferretdb.pod_port")


def _alive(ctx: Context, name: str, program: str) -> bool:
    pid = pid_of(ctx, name)
    return daemon_alive(ctx, name) and pid is not None and program in cmdline(pid)


def _running(ctx: Context) -> bool:
    return _alive(ctx, NAME, "ferretdb")


def url(ctx: Context) -> str | None:
    port = _port(ctx)
    return f"mongodb://127.0.0.1:{port}/" if port is not None else None


def pod_url(ctx: Context) -> str | None:
    port = _relay_port(ctx)
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
    ensure_debian_packages(ctx, ["socat"], "the pods' way to FerretDB")
    port = _port(ctx)
    if _running(ctx) and port is not None and answers_hello("127.0.0.1", port):
        _ensure_relay(ctx, port)
        return
    home = _home(ctx)
    _stop(ctx)
    # Each start is a fresh, empty server (tests use fresh database names anyway).
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    port = free_port()
    ctx.put("ferretdb.port", port)
    _start(ctx, exe, home, port)
    _ensure_relay(ctx, port)


def _ensure_relay(ctx: Context, port: int) -> None:
    """socat on HOST_IP, a process per connection, to FerretDB on loopback (for pods)."""
    pod_port = _relay_port(ctx)
    if _alive(ctx, RELAY, "socat") and pod_port is not None and answers_hello(HOST_IP, pod_port):
        return
    stop_daemon(ctx, RELAY)
    kill_stray(_relay_target(port))
    pod_port = free_port(HOST_IP)
    ctx.put("ferretdb.pod_port", pod_port)
    argv = [
        "socat",
        f"TCP4-LISTEN:{pod_port},bind={HOST_IP},fork,reuseaddr,nodelay,backlog=256",
        _relay_target(port),
    ]
    start_daemon(ctx, RELAY, argv, cwd=_home(ctx))
    where = f"the FerretDB relay on {HOST_IP}:{pod_port}"
    wait_until(lambda: answers_hello(HOST_IP, pod_port), 10, where, ctx.logfile(RELAY), RELAY, ctx)


def _relay_target(port: int) -> str:
    return f"TCP4:127.0.0.1:{port},nodelay"


def _stop(ctx: Context) -> None:
    """Stop the relay and the server, and leftovers of a killed run whose pid file was lost."""
    stop_daemon(ctx, RELAY)
    port = _port(ctx)
    if port is not None:
        kill_stray(_relay_target(port))
    stop_daemon(ctx, NAME)
    kill_stray(str(_home(ctx) / "data"))


def _start(ctx: Context, exe: Path, home: Path, port: int) -> None:
    argv = [
        str(exe),
        "--handler=sqlite",
        # WAL without an fsync per commit: a commit survives the server's crash (the fault
        # tests kill it), as MongoDB's default write concern does between journal flushes.
        # With a sync per commit every write waited on the disk (an update's p50 3.2 ms, 1.5 without).
        f"--sqlite-url=file:{home / 'data'}/?_pragma=synchronous(normal)",
        f"--listen-addr=127.0.0.1:{port}",
        "--telemetry=disable",
        f"--state-dir={home}",
        "--debug-addr=-",
        "--log-level=info",
    ]
    start_daemon(ctx, NAME, argv, cwd=home)
    wait_until(
        lambda: answers_hello("127.0.0.1", port),
        START_TIMEOUT,
        f"FerretDB on 127.0.0.1:{port}",
        ctx.logfile(NAME),
        NAME,
        ctx,
    )


def restart(ctx: Context) -> None:
    """Kill the server as a crash would, then start it again on the same address and data
    (the relay stays: pods' connections fail meanwhile, as they would to a crashed server)."""
    port = _port(ctx)
    if external_url() or port is None or not _running(ctx):
        raise TestenvError("no FerretDB of ours is running: `scripts/testenv up ferretdb` first")
    crash_daemon(ctx, NAME)
    _start(ctx, install(ctx), _home(ctx), port)


def down(ctx: Context) -> None:
    if _port(ctx) is None and not _running(ctx) and not _alive(ctx, RELAY, "socat"):
        return
    _stop(ctx)
    shutil.rmtree(_home(ctx), ignore_errors=True)
    ctx.forget("ferretdb.port")
    ctx.forget("ferretdb.pod_port")


def status(ctx: Context) -> str:
    external = external_url()
    if external:
        return f"external server {external} ({URL_VARIABLE})"
    port = _port(ctx)
    if not _running(ctx) or port is None:
        return "stopped"
    state = "ready" if answers_hello("127.0.0.1", port) else "NOT ANSWERING"
    relay = _relay_port(ctx)
    pods = "relay down"
    if _alive(ctx, RELAY, "socat") and relay is not None:
        pods = pod_url(ctx) if answers_hello(HOST_IP, relay) else f"{pod_url(ctx)} NOT ANSWERING"
    return f"{state}, pid {pid_of(ctx, NAME)}, {url(ctx)} (pods: {pods})"


def env(ctx: Context) -> dict[str, str]:
    external = external_url()
    if external:
        return {URL_VARIABLE: external, POD_URL_VARIABLE: os.environ.get(POD_URL_VARIABLE) or external}
    address, for_pods = url(ctx), pod_url(ctx)
    if not (address and for_pods and _running(ctx)):
        return {}
    return {URL_VARIABLE: address, POD_URL_VARIABLE: for_pods}
