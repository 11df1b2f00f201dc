"""The test network: blackhole routes, the pod bridge holding HOST_IP, sysctl records.

Comes up first and goes down last (TESTENV.md, "Network safety"):
- the pod range and the service range get `blackhole` routes before anything can
  target them, so a packet to an address no local interface holds is dropped here
  instead of following the default route out of the machine;
- the bridge BRIDGE holds HOST_IP/24 before any service binds to it; host services
  (Kafka, FerretDB, the API server) listen there so that pods reach them too;
- the sysctls the cluster changes (kube-proxy, the CNI bridge plugin) are recorded
  once, before anything changes them, and restored at `down`. A killed run leaves its
  records in the state file and the next `up` keeps them: they are the originals.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

from . import sysctls
from .common import (
    BRIDGE,
    HOST_IP,
    POD_CIDR,
    POD_RANGE_BLACKHOLE,
    SERVICE_CIDR,
    Context,
    TestenvError,
    require_tool,
    run,
    say,
)

NAME = "network"

BLACKHOLES = (POD_RANGE_BLACKHOLE, SERVICE_CIDR)
_PREFIX = int(POD_CIDR.split("/")[1])
# The ranges whose users must be stopped before their routes go.
_GUARDED = tuple(ipaddress.ip_network(cidr) for cidr in BLACKHOLES)

# Sysctls kube-proxy and the CNI bridge plugin change. The bridge-nf ones exist only
# while br_netfilter is loaded; they are recorded when present.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
)
_SYSCTLS_KEY = "network.sysctls"


# -- routes and the bridge ----------------------------------------------------------
def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def _route_type(cidr: str) -> str | None:
    routes = _ip_json("route", "show", "exact", cidr)
    if not routes:
        return None
    return str(routes[0].get("type", "unicast"))


def add_blackholes() -> None:
    for cidr in BLACKHOLES:
        kind = _route_type(cidr)
        if kind == "blackhole":
            continue
        if kind is not None:
            raise TestenvError(
                f"a {kind} route for {cidr} already exists (`ip route show exact {cidr}`); "
                f"the test network needs that range to itself: remove that route first"
            )
        run(["ip", "route", "add", "blackhole", cidr])


def remove_blackholes() -> None:
    for cidr in BLACKHOLES:
        if _route_type(cidr) == "blackhole":
            run(["ip", "route", "del", "blackhole", cidr])


def _holders_of(address: str) -> list[tuple[str, int]]:
    """(interface, prefix length) of every interface holding `address`."""
    return [
        (str(link["ifname"]), int(info["prefixlen"]))
        for link in _ip_json("-4", "addr", "show")
        for info in link.get("addr_info", [])
        if info.get("local") == address
    ]


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def _bridge_is_up() -> bool:
    try:
        return bool(int(Path(f"/sys/class/net/{BRIDGE}/flags").read_text(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return False


def create_bridge() -> None:
    if bridge_exists() and not Path(f"/sys/class/net/{BRIDGE}/bridge").exists():
        raise TestenvError(f"interface {BRIDGE} exists but is not a bridge: remove it (ip link del {BRIDGE})")
    for ifname, prefix in _holders_of(HOST_IP):
        if ifname != BRIDGE:
            raise TestenvError(
                f"{HOST_IP} is already held by {ifname}; "
                f"remove it (ip addr del {HOST_IP}/{prefix} dev {ifname})"
            )
    if not bridge_exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    if (BRIDGE, _PREFIX) not in _holders_of(HOST_IP):
        run(["ip", "addr", "replace", f"{HOST_IP}/{_PREFIX}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if bridge_exists():
        run(["ip", "link", "del", BRIDGE])


def check_host_ip_reachable() -> None:
    """A listener on HOST_IP must be reachable from the host, ports or no ports."""
    with socket.socket() as server:
        server.bind((HOST_IP, 0))
        server.listen(1)
        try:
            with socket.create_connection(server.getsockname(), timeout=2):
                pass
        except OSError as exc:
            raise TestenvError(f"a listener on {HOST_IP} is not reachable from the host: {exc}") from exc


# -- users of the guarded addresses ---------------------------------------------------
_PID = re.compile(r"pid=(\d+)")


def _guarded(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]").split("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # Java listens on [::ffff:10.244.0.1]
    return any(address in net for net in _GUARDED)


def address_users() -> dict[int, str]:
    """Processes with a socket (any state) whose local or peer address is guarded."""
    out = run(["ss", "-Hnaptu"]).stdout
    users: dict[int, str] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6 or not (_guarded(fields[4]) or _guarded(fields[5])):
            continue
        for pid in _PID.findall(line):
            users[int(pid)] = line
    protected = {os.getpid(), os.getppid()}
    return {pid: line for pid, line in users.items() if pid not in protected}


def stop_address_users(timeout: float = 10.0) -> None:
    users = address_users()
    if not users:
        return
    for pid in users:
        say(f"network: stopping pid {pid}, still using the test network: {_comm(pid)}")
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in users):
        time.sleep(0.1)
    for pid in users:
        if _alive(pid):
            _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in address_users()):
        time.sleep(0.1)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# -- the service interface ----------------------------------------------------------
def up(ctx: Context) -> None:
    require_tool("ip", "install Debian's iproute2 (apt-get install iproute2)")
    require_tool("ss", "install Debian's iproute2 (apt-get install iproute2)")
    if os.geteuid() != 0:
        raise TestenvError("the test network needs root (routes, a bridge, sysctls)")
    sysctls.record(ctx, _SYSCTLS_KEY, SYSCTLS)
    add_blackholes()
    create_bridge()
    check_host_ip_reachable()


def ensure(ctx: Context) -> None:
    """Bring the network up unless it is (for services started on their own)."""
    if not (
        _bridge_is_up()
        and (BRIDGE, _PREFIX) in _holders_of(HOST_IP)
        and all(_route_type(cidr) == "blackhole" for cidr in BLACKHOLES)
    ):
        up(ctx)


def down(ctx: Context) -> None:
    problems: list[str] = []
    stop_address_users()
    delete_bridge()
    remove_blackholes()
    problems += sysctls.restore(ctx, _SYSCTLS_KEY)
    if problems:
        raise TestenvError("; ".join(problems))


def status(ctx: Context) -> str:
    parts = []
    if bridge_exists():
        held = (BRIDGE, _PREFIX) in _holders_of(HOST_IP)
        parts.append(f"bridge {BRIDGE} {'with' if held else 'WITHOUT'} {HOST_IP}/{_PREFIX}")
    else:
        parts.append(f"no bridge {BRIDGE}")
    holes = [cidr for cidr in BLACKHOLES if _route_type(cidr) == "blackhole"]
    parts.append(f"blackhole routes: {', '.join(holes) or 'none'}")
    if ctx.get(_SYSCTLS_KEY):
        parts.append("sysctls recorded")
    return "; ".join(parts)


def env(ctx: Context) -> dict[str, str]:
    return {"FLOWKIT_TEST_HOST_IP": HOST_IP} if bridge_exists() else {}
