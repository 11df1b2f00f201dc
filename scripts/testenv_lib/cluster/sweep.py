"""Find and remove what a cluster run leaves on the host: processes, mounts, iptables chains.

Used by `down` after the orderly shutdown, and by `up` before starting, so that a run
killed without warning (shims and pods outlive containerd; mounts and chains stay)
is cleaned up by the next one. Everything is found by our own directory or names.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from ..common import run, say

# iptables chains created by kube-proxy / the kubelet (KUBE-*), the portmap CNI plugin
# (CNI-HOSTPORT-*, CNI-DN-*) and this package (FLOWKIT-*).
_OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-HOSTPORT-", "CNI-DN-", "FLOWKIT-")
_TABLES = ("filter", "nat", "mangle", "raw")


# -- processes -------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _root_mount_line(pid: int) -> str:
    for line in _read(f"/proc/{pid}/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            return line
    return ""


def processes_of(root: Path) -> list[int]:
    """Our daemons and shims (the path is in their command line) and our containers'
    processes (their root filesystem is an overlay of our snapshots), even orphaned."""
    needle = str(root)
    me = {os.getpid(), os.getppid()}
    found = []
    for pid in _pids():
        if pid in me:
            continue
        if needle in _read(f"/proc/{pid}/cmdline") or needle in _root_mount_line(pid):
            found.append(pid)
    return found


def kill_processes_of(root: Path, timeout: float = 10.0) -> None:
    pids = processes_of(root)
    if not pids:
        return
    say(f"cluster: killing {len(pids)} leftover process(es) under {root}")
    for pid in pids:
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_of(root):
        time.sleep(0.1)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# -- mounts ----------------------------------------------------------------------
def _unescape(path: str) -> str:
    # /proc/*/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1 : i + 4].isdigit() and len(path[i + 1 : i + 4]) == 3:
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    points = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def unmount_all_under(root: Path) -> list[str]:
    """Unmount deepest first, lazily if busy; returns what could not be unmounted."""
    for _ in range(10):
        points = mounts_under(root)
        if not points:
            return []
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)
    return mounts_under(root)


# -- iptables --------------------------------------------------------------------
def _is_ours(chain: str) -> bool:
    return chain.startswith(_OUR_CHAIN_PREFIXES)


def _removal_script(table: str, dump: str) -> str | None:
    """iptables-restore --noflush input deleting our chains and every jump to them."""
    chains = [line[1:].split()[0] for line in dump.splitlines() if line.startswith(":")]
    ours = [c for c in chains if _is_ours(c)]
    if not ours:
        return None
    lines = [f"*{table}"]
    for line in dump.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        chain = words[1]
        target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")), "")
        if not _is_ours(chain) and _is_ours(target):
            lines.append("-D " + line[3:])
    lines += [f"-F {c}" for c in ours]
    lines += [f"-X {c}" for c in ours]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def remove_our_chains() -> list[str]:
    """Delete our chains from every table (IPv4 and IPv6); returns problems."""
    problems = []
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        for table in _TABLES:
            dump = run([save, "-t", table], check=False)
            if dump.returncode != 0:
                continue
            script = _removal_script(table, dump.stdout)
            if script is None:
                continue
            proc = _restore(restore, script)
            if proc.returncode != 0:
                problems.append(f"{restore} ({table}): {proc.stderr.strip()}")
    return problems


def _restore(restore: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([restore, "-w", "--noflush"], input=script, text=True, capture_output=True)


def our_chains() -> list[str]:
    found = []
    for save in ("iptables-save", "ip6tables-save"):
        for table in _TABLES:
            dump = run([save, "-t", table], check=False).stdout
            found += [
                f"{save.split('-')[0]}/{table}/{line[1:].split()[0]}"
                for line in dump.splitlines()
                if line.startswith(":") and _is_ours(line[1:].split()[0])
            ]
    return found
