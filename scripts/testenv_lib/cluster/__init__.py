"""`cluster`: a real one-node Kubernetes cluster (TESTENV.md, "Kubernetes v1.37.2").

up:   packages → binaries → clean leftovers → certificates → etcd → kube-apiserver →
      bootstrap objects → controller-manager + scheduler → containerd → kubelet →
      kube-proxy → CoreDNS → wait for the node to be Ready and untainted.
down: kubelet and controllers → every pod sandbox (CNI DEL) → containerd → kube-proxy
      (+ --cleanup) and CoreDNS → API server → etcd → whatever is still ours (processes,
      mounts, iptables chains) → sysctls back → per-run files removed.

Every user of HOST_IP and of the pod and service ranges is stopped here, before the
network module (which runs last at `down`) removes the address and the routes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .. import network, sysctls
from ..common import (
    Context,
    TestenvError,
    cache_lock,
    daemon_alive,
    ensure_debian_packages,
    link_bin,
    pid_of,
    say,
    stop_daemon,
    wait_until,
)
from . import addons, controlplane, node, sweep
from .build import K8S_VERSION, coredns_bin, ensure_binaries, k8s_bin
from .etcd import ETCD_VERSION, etcd_bin
from .layout import Layout, Ports
from .pki import ADMIN, NODE_NAME

NAME = "cluster"
# etcd is built from the Go module proxy (etcd.py): Debian's is too old for Kubernetes 1.37.
DEBIAN_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
)
# In start order; `_teardown` has its own order (what may recreate pods goes first).
DAEMONS = (
    *controlplane.DAEMONS,
    node.CONTAINERD,
    node.KUBELET_DAEMON,
    addons.KUBE_PROXY_DAEMON,
    addons.COREDNS_DAEMON,
)
_NODE_READY_TIMEOUT = 120.0
# The kubelet sets kernel.panic=10, kernel.panic_on_oops=1, vm.overcommit_memory=1 (and
# a few more) at start; the CNI bridge plugin turns on IPv4 forwarding; `_start` turns
# on bridge-nf-call-iptables. All recorded before `up` changes them, restored at `down`.
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
_SYSCTLS_KEY = "cluster.sysctls"
_RUN_LOCK = "cluster-run"


def up(ctx: Context) -> None:
    network.ensure(ctx)  # the bridge and blackhole routes come before anything can dial them
    ensure_debian_packages(ctx, DEBIAN_PACKAGES, "the test cluster")
    ensure_binaries(ctx)
    link_bin(ctx, "kubectl", k8s_bin(ctx, "kubectl"))
    layout = Layout.of(ctx)
    # One `up` or `down` at a time: two `up`s that both find the cluster unhealthy (or
    # running old binaries) would otherwise both tear it down and start it.
    with cache_lock(ctx, _RUN_LOCK):
        if _healthy(ctx, layout):
            changed = _changed_binaries(ctx)
            if not changed:
                say("cluster already running")
                return
            # A new etcd cannot take over the old one's data (it upgrades one minor
            # version at a time), and a fresh cluster is what a user of a new version gets.
            say(f"cluster: restarting it anew (its objects are not kept): {'; '.join(changed)}")
        if any(daemon_alive(ctx, d) for d in DAEMONS) or layout.root.exists():
            say("cluster: cleaning up a previous run first")
            _teardown(ctx, layout)
        _start(ctx, layout)


def _start(ctx: Context, layout: Layout) -> None:
    layout.config.mkdir(parents=True, exist_ok=True)
    ports = Ports.load_or_pick(ctx)
    layout.pki.ensure()
    sysctls.record(ctx, _SYSCTLS_KEY, CLUSTER_SYSCTLS)
    # Pod → Service → pod on the same bridge: the reply is bridged, and only this lets
    # conntrack undo kube-proxy's DNAT on it.
    sysctls.set_if_present("net.bridge.bridge-nf-call-iptables", "1")
    controlplane.start_etcd(ctx, layout, ports)
    controlplane.start_apiserver(ctx, layout, ports)
    layout.pki.kubeconfig(layout.admin_kubeconfig, ADMIN, ports.apiserver_url)
    addons.apply_bootstrap_objects(ctx, layout)
    controlplane.start_controllers(ctx, layout, ports)
    node.start_containerd(ctx, layout)
    node.ensure_egress_guard()
    node.start_kubelet(ctx, layout, ports)
    addons.start_kube_proxy(ctx, layout, ports)
    node.ensure_egress_guard()  # kube-proxy prepends its own FORWARD rules: stay first
    addons.start_coredns(ctx, layout, ports)
    _wait_for_node(ctx, layout)
    wait_until(
        lambda: addons.pods_never_pull(ctx, layout),
        30,
        "the local-images-only admission policy",
        ctx.logfile(controlplane.APISERVER),
    )


def _node(ctx: Context, layout: Layout) -> dict[str, object] | None:
    try:
        node_object = json.loads(addons.kubectl(ctx, layout, "get", "node", NODE_NAME, "-o", "json"))
    except (TestenvError, ValueError):
        return None
    return node_object if isinstance(node_object, dict) else None


def _node_ready_untainted(node_object: dict[str, object] | None) -> bool:
    if node_object is None:
        return False
    status = node_object.get("status", {})
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    spec = node_object.get("spec", {})
    taints = spec.get("taints") if isinstance(spec, dict) else None
    return ready and not taints


def _wait_for_node(ctx: Context, layout: Layout) -> None:
    deadline = time.monotonic() + _NODE_READY_TIMEOUT
    while time.monotonic() < deadline:
        if _node_ready_untainted(_node(ctx, layout)):
            return
        for daemon in DAEMONS:
            if not daemon_alive(ctx, daemon):
                raise TestenvError(f"{daemon} exited while waiting for the node", ctx.logfile(daemon))
        time.sleep(0.5)
    raise TestenvError(
        f"node {NODE_NAME} not Ready and untainted after {_NODE_READY_TIMEOUT:.0f}s: "
        f"{json.dumps(_node(ctx, layout), indent=1)[-2000:]}",
        ctx.logfile(node.KUBELET_DAEMON),
    )


def _healthy(ctx: Context, layout: Layout) -> bool:
    ports = Ports.saved(ctx)
    return (
        ports is not None
        and all(daemon_alive(ctx, d) for d in DAEMONS)
        and controlplane.api_ready(layout.pki, ports)
        and _node_ready_untainted(_node(ctx, layout))
    )


def _daemon_binaries(ctx: Context) -> dict[str, Path]:
    """The executable each daemon is started from now (its start function's argv[0])."""
    kube = {
        d: k8s_bin(ctx, d)
        for d in (
            controlplane.APISERVER,
            controlplane.CONTROLLER_MANAGER_DAEMON,
            controlplane.SCHEDULER_DAEMON,
            node.KUBELET_DAEMON,
            addons.KUBE_PROXY_DAEMON,
        )
    }
    containerd = shutil.which(node.CONTAINERD)
    return {
        controlplane.ETCD: etcd_bin(ctx),
        **kube,
        addons.COREDNS_DAEMON: coredns_bin(ctx),
        **({node.CONTAINERD: Path(containerd)} if containerd else {}),
    }


def _changed_binaries(ctx: Context) -> list[str]:
    """Running daemons whose executable is not the one `up` would start now: a version
    bump (another cached path) or a rebuild or package upgrade in place (the kernel then
    shows the running file as deleted)."""
    changed = []
    for daemon, binary in _daemon_binaries(ctx).items():
        pid = pid_of(ctx, daemon)
        try:
            running = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # gone: `_healthy` has said so already
        if running != str(binary.resolve()):
            changed.append(f"{daemon} runs {running}, the current one is {binary}")
    return changed


def down(ctx: Context) -> None:
    with cache_lock(ctx, _RUN_LOCK):
        _teardown(ctx, Layout.of(ctx))


def _teardown(ctx: Context, layout: Layout) -> None:
    problems: list[str] = []
    # Nothing may recreate pods while they go.
    for daemon in (
        node.KUBELET_DAEMON,
        controlplane.SCHEDULER_DAEMON,
        controlplane.CONTROLLER_MANAGER_DAEMON,
    ):
        stop_daemon(ctx, daemon)
    try:
        node.sweep_pods(ctx, layout)
    except TestenvError as exc:
        problems.append(str(exc))
    stop_daemon(ctx, node.CONTAINERD)
    for daemon in (
        addons.COREDNS_DAEMON,
        addons.KUBE_PROXY_DAEMON,
        controlplane.APISERVER,
        controlplane.ETCD,
    ):
        stop_daemon(ctx, daemon)
    addons.cleanup_kube_proxy(ctx)
    # Whatever a killed run (or a failed sweep) left: shims, pod processes, mounts, chains.
    sweep.kill_processes_of(layout.root)
    left_mounted = sweep.unmount_all_under(layout.root)
    if left_mounted:
        problems.append(f"still mounted: {left_mounted}")
    problems += sweep.remove_our_chains()
    node.remove_container_log_links(layout)
    node.remove_stale_shim_sockets()
    problems += sysctls.restore(ctx, _SYSCTLS_KEY)
    if not left_mounted:
        shutil.rmtree(layout.root, ignore_errors=True)
    Ports.forget(ctx)
    if problems:
        raise TestenvError("cluster teardown: " + "; ".join(problems))


def status(ctx: Context) -> str:
    layout = Layout.of(ctx)
    alive = [d for d in DAEMONS if daemon_alive(ctx, d)]
    if not alive:
        return "down"
    if len(alive) < len(DAEMONS):
        return (
            f"PARTIAL: running {', '.join(alive)}; missing {', '.join(d for d in DAEMONS if d not in alive)}"
        )
    ports = Ports.saved(ctx)
    api = ports.apiserver_url if ports else "?"
    node_state = "Ready" if _node_ready_untainted(_node(ctx, layout)) else "NOT Ready"
    changed = [c.split()[0] for c in _changed_binaries(ctx)]
    note = f"; binaries changed ({', '.join(changed)}): `up` restarts it" if changed else ""
    return f"up: Kubernetes {K8S_VERSION} (etcd {ETCD_VERSION}) at {api}, node {NODE_NAME} {node_state}{note}"


def env(ctx: Context) -> dict[str, str]:
    layout = Layout.of(ctx)
    values: dict[str, str] = {}
    kubectl = k8s_bin(ctx, "kubectl")
    if kubectl.exists():
        values["FLOWKIT_KUBECTL"] = str(kubectl)
    if layout.admin_kubeconfig.exists():
        values["KUBECONFIG"] = str(layout.admin_kubeconfig)
        values["FLOWKIT_CONTAINERD_ADDRESS"] = str(layout.containerd_socket)
        values["FLOWKIT_TEST_NODE"] = NODE_NAME
        values["FLOWKIT_TEST_PAUSE_IMAGE"] = node.pause_image(ctx)
    ports = Ports.saved(ctx)
    if ports is not None:
        values["FLOWKIT_TEST_ETCD_URL"] = f"http://127.0.0.1:{ports.etcd_client}"
    values["FLOWKIT_TEST_LOGS"] = str(ctx.run / "logs")
    return values
