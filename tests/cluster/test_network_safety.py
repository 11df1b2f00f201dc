"""No packet leaves the machine (TESTENV.md, "Network safety").

- The host cannot dial cluster IPs at all: the blackhole route answers before any
  kube-proxy rule, at once and locally (EINVAL). Pods can (kube-proxy's DNAT comes
  before their routing decision); test_networking.py shows it.
- A pod dialling an address behind any interface but the pod bridge is rejected by the
  node's egress guard at once. The target here is a veth into a network namespace this
  test makes, inside the blackholed pod range: if the guard were missing, the packet
  would still stay on this machine.
- Pods never pull images (nothing dials a registry).
- With the cluster down (the network module still up), the service address and a former
  pod address fail locally, and nothing of the cluster is left: no process, mount or
  iptables chain. And `up` recovers from a run killed without warning. These two stop
  the cluster, so they run last.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kube import CLUSTER_COMPONENTS, TESTENV, Kubectl, run_pod

KUBERNETES_SERVICE_IP = "10.96.0.1"
EGRESS_NETNS = "flowkit-egress-test"
# Inside the blackholed pod range (10.244.0.0/16) but outside the pod subnet: the /30
# route of the veth wins; without it the blackhole does.
EGRESS_HOST_SIDE, EGRESS_TARGET = "10.244.255.249", "10.244.255.250"
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-HOSTPORT-", "CNI-DN-", "FLOWKIT-")


def _connect_error(address: str, port: int, timeout: float) -> tuple[OSError | None, float]:
    started = time.monotonic()
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError as error:
        return error, time.monotonic() - started
    return None, time.monotonic() - started


def test_the_host_cannot_dial_a_cluster_ip(kubectl: Kubectl) -> None:
    # Cluster IPs are for pods: on the host the blackhole route answers before any
    # kube-proxy rule, so a connection fails at once and locally (EINVAL).
    address = kubectl("get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}")
    error, seconds = _connect_error(address, 443, timeout=5)
    assert isinstance(error, OSError) and error.errno == errno.EINVAL and seconds < 1, (error, seconds)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def outside_interface() -> Iterator[str]:
    """A veth to a namespace of ours: for a pod, an interface other than the bridge."""
    subprocess.run(["ip", "netns", "del", EGRESS_NETNS], capture_output=True)
    _ip("netns", "add", EGRESS_NETNS)
    try:
        _ip("link", "add", "fkegress0", "type", "veth", "peer", "name", "fkegress1")
        _ip("link", "set", "fkegress1", "netns", EGRESS_NETNS)
        _ip("addr", "add", f"{EGRESS_HOST_SIDE}/30", "dev", "fkegress0")
        _ip("link", "set", "fkegress0", "up")
        _ip("-n", EGRESS_NETNS, "addr", "add", f"{EGRESS_TARGET}/30", "dev", "fkegress1")
        _ip("-n", EGRESS_NETNS, "link", "set", "fkegress1", "up")
        route = subprocess.run(["ip", "route", "get", EGRESS_TARGET], capture_output=True, text=True).stdout
        assert "dev fkegress0" in route, route
        yield EGRESS_TARGET
    finally:
        subprocess.run(["ip", "link", "del", "fkegress0"], capture_output=True)
        subprocess.run(["ip", "netns", "del", EGRESS_NETNS], capture_output=True)


def test_pod_traffic_to_another_interface_is_rejected_at_once(
    kubectl: Kubectl, smoke_image: str, outside_interface: str
) -> None:
    kubectl.apply(run_pod("egress", smoke_image, ["connect", outside_interface, "80"]))
    outcome, seconds = kubectl.pod_logs_after_success("egress").split()
    assert outcome == "connect=ENETUNREACH"
    assert float(seconds.split("=")[1]) < 1


def _cluster_root(cluster_env: dict[str, str]) -> Path:
    return Path(cluster_env["KUBECONFIG"]).parent


def _processes_using(root: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def _mounts_under(root: Path) -> list[str]:
    return [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root))
    ]


def _our_chains() -> list[str]:
    chains = []
    for save in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([save], capture_output=True, text=True).stdout
        chains += [
            line
            for line in dump.splitlines()
            if line.startswith(":") and line[1:].startswith(OUR_CHAIN_PREFIXES)
        ]
    return chains


def _testenv(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(TESTENV), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert proc.returncode == 0, f"scripts/testenv {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


@pytest.mark.restarts_cluster
def test_with_the_cluster_down_pod_and_service_addresses_fail_locally(
    kubectl: Kubectl, cluster_env: dict[str, str], pause_image: str, host_ip: str
) -> None:
    kubectl.apply(run_pod("former", pause_image, []))
    kubectl.wait("pod/former", "condition=Ready")
    pod_ip = kubectl("get", "pod", "former", "-o", "jsonpath={.status.podIP}")
    root = _cluster_root(cluster_env)
    bridge_ports = Path("/sys/class/net/flowkit0/brif")

    _testenv("down", "cluster")
    try:
        assert _processes_using(root) == []
        assert _mounts_under(root) == []
        assert _our_chains() == []
        assert list(bridge_ports.iterdir()) == [], "a pod's veth is still on the bridge"

        # The service range: no kube-proxy rule any more, only the blackhole route.
        lookup = subprocess.run(["ip", "route", "get", KUBERNETES_SERVICE_IP], capture_output=True, text=True)
        assert lookup.returncode != 0, f"{KUBERNETES_SERVICE_IP} is routable: {lookup.stdout}"
        error, seconds = _connect_error(KUBERNETES_SERVICE_IP, 443, timeout=5)
        assert error is not None and not isinstance(error, TimeoutError) and seconds < 1, (error, seconds)

        # A former pod address: on the bridge, which has no port left; the host's own
        # address is the source, and the attempt ends here (ARP finds nobody).
        route = subprocess.run(["ip", "route", "get", pod_ip], capture_output=True, text=True).stdout
        assert "dev flowkit0" in route and " via " not in route and f"src {host_ip}" in route, route
        error, seconds = _connect_error(pod_ip, 80, timeout=10)
        assert error is not None, f"{pod_ip}:80 accepted a connection with the cluster down"
    finally:
        _testenv("up", "cluster")


def test_pods_never_pull_images_from_a_registry(kubectl: Kubectl) -> None:
    # Images come from `scripts/testenv image build|load`; a pull would dial a registry
    # off this machine. A server-side dry run goes through admission but creates nothing.
    pod = kubectl.run_dry(
        "run",
        "puller",
        "--image=registry.invalid/anything:1",
        "--image-pull-policy=Always",
        "--restart=Never",
    )
    assert [c["imagePullPolicy"] for c in pod["spec"]["containers"]] == ["Never"]


@pytest.mark.restarts_cluster
def test_up_recovers_from_a_killed_run(
    kubectl: Kubectl, admin_kubectl: Kubectl, cluster_env: dict[str, str], pause_image: str
) -> None:
    # A session's processes are killed without warning when it ends: every component
    # and every containerd shim at once, leaving pods, mounts and iptables chains.
    kubectl.apply(run_pod("orphan", pause_image, []))
    kubectl.wait("pod/orphan", "condition=Ready")
    root = _cluster_root(cluster_env)
    pid_files = [root.parent / "pids" / f"{name}.pid" for name in CLUSTER_COMPONENTS]
    doomed = [int(p.read_text()) for p in pid_files]
    doomed += [int(line.split(":")[0]) for line in _processes_using(root) if "containerd-shim" in line]
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)

    _testenv("up", "cluster")

    assert not [pid for pid in doomed if Path(f"/proc/{pid}").exists()]
    admin_kubectl.wait("node/flowkit-node", "condition=Ready", timeout=60)
    admin_kubectl.wait("serviceaccount/default", "create", timeout=30)  # a fresh store
    fresh = Kubectl(admin_kubectl.binary, admin_kubectl.kubeconfig, "default")
    fresh.apply(run_pod("after-recovery", pause_image, []))
    try:
        fresh.wait("pod/after-recovery", "condition=Ready")
    finally:
        fresh("delete", "pod", "after-recovery", "--wait=false")
