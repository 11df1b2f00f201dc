"""Sysctls the cluster changes, recorded before `up` changes them and restored at `down`.

The kubelet sets kernel.panic=10, kernel.panic_on_oops=1, vm.overcommit_memory=1 (and
a few more) at start; the CNI bridge plugin turns on IPv4 forwarding; and Services
between pods on one bridge need bridged traffic to pass iptables. A record left by a
killed run is kept by the next `up`: it holds the original values.
"""

from __future__ import annotations

from pathlib import Path

from ..common import Context

CLUSTER_SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
)
_STATE_KEY = "cluster.sysctls"


def _path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _path(name).read_text().strip()
    except OSError:
        return None


def record_sysctls(ctx: Context) -> None:
    if ctx.get(_STATE_KEY):
        return
    ctx.put(_STATE_KEY, {n: v for n in CLUSTER_SYSCTLS if (v := read_sysctl(n)) is not None})


def set_bridge_sysctls() -> None:
    """Pod → Service → pod on the same bridge: the reply is bridged, and only
    bridge-nf-call-iptables lets conntrack undo kube-proxy's DNAT on it."""
    if read_sysctl("net.bridge.bridge-nf-call-iptables") not in (None, "1"):
        _path("net.bridge.bridge-nf-call-iptables").write_text("1\n")


def restore_sysctls(ctx: Context) -> list[str]:
    recorded = ctx.get(_STATE_KEY)
    problems = []
    if isinstance(recorded, dict):
        for name, value in recorded.items():
            if read_sysctl(name) in (None, str(value)):
                continue
            try:
                _path(name).write_text(f"{value}\n")
            except OSError as exc:
                problems.append(f"could not restore {name}={value}: {exc}")
    if not problems:
        ctx.forget(_STATE_KEY)
    return problems
