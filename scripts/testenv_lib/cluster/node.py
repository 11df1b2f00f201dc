"""The node: containerd (with runc and the CNI bridge) and the kubelet.

containerd gets its own config, root, state and socket, so it never meets a system
containerd. Pods join the bridge BRIDGE that the network module made (the bridge
plugin finds HOST_IP already there and uses it as the gateway), with addresses from
POD_CIDR. A FORWARD rule rejects pod traffic that would leave through any other
interface: a pod dialling an outside address fails at once instead of reaching the
machine's default route (TESTENV.md, "Network safety").
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .. import docker_archive
from ..common import (
    BRIDGE,
    DNS_SERVICE_IP,
    HOST_IP,
    POD_CIDR,
    Context,
    TestenvError,
    daemon_alive,
    run,
    start_daemon,
    wait_until,
)
from .build import k8s_bin, local_bin
from .layout import Layout, Ports
from .pki import CLUSTER_DOMAIN, KUBELET, NODE_NAME

CONTAINERD = "containerd"
KUBELET_DAEMON = "kubelet"
CNI_NETWORK = "flowkit-pods"
CNI_BIN_DIR = "/usr/lib/cni"
EGRESS_CHAIN = "FLOWKIT-POD-EGRESS"
# A tag per build of our pause binary, so that a rebuilt one is re-imported.
PAUSE_REPOSITORY = "flowkit.local/pause"


def pause_image(ctx: Context) -> str:
    return f"{PAUSE_REPOSITORY}:{local_bin(ctx, 'pause').parent.name.removeprefix('tools-')}"


# -- containerd --------------------------------------------------------------------
def containerd_config(layout: Layout, sandbox_image: str) -> str:
    c = layout.containerd
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # root here may not lower OOM scores below its own
  restrict_oom_score_adj = true
  # keep pod network namespaces under our state directory, not /run/netns
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{c / "runc"}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_conflist(layout: Layout) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods only talk to each other and to HOST_IP: nothing to masquerade.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def running_containerd_socket(ctx: Context) -> Path | None:
    layout = Layout.of(ctx)
    if daemon_alive(ctx, CONTAINERD) and layout.containerd_socket.exists():
        return layout.containerd_socket
    return None


def ctr(layout: Layout, *args: str, check: bool = True) -> str:
    return run(["ctr", "--address", str(layout.containerd_socket), "-n", "k8s.io", *args], check=check).stdout


def start_containerd(ctx: Context, layout: Layout) -> None:
    config = layout.config / "containerd.toml"
    config.write_text(containerd_config(layout, pause_image(ctx)))
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (layout.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(
        json.dumps(cni_conflist(layout), indent=2)
    )
    start_daemon(ctx, CONTAINERD, ["containerd", "--config", str(config)])
    wait_until(
        lambda: (
            run(["ctr", "--address", str(layout.containerd_socket), "version"], check=False).returncode == 0
        ),
        30,
        "containerd",
        ctx.logfile(CONTAINERD),
        CONTAINERD,
        ctx,
    )
    _import_pause_image(ctx, layout)


def _import_pause_image(ctx: Context, layout: Layout) -> None:
    image = pause_image(ctx)
    archive = ctx.cache / "images" / f"pause-{image.rsplit(':', 1)[1]}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
            layer = Path(tmp) / "layer.tar"
            docker_archive.single_file_layer(layer, "pause", local_bin(ctx, "pause").read_bytes())
            docker_archive.write(archive, image, layer, {"Entrypoint": ["/pause"]})
    ctr(layout, "images", "import", str(archive))


# -- the egress guard ----------------------------------------------------------------
def _iptables(*args: str, check: bool = True) -> bool:
    return run(["iptables", "-w", *args], check=check).returncode == 0


def ensure_egress_guard() -> None:
    """Reject forwarded pod traffic to anything but the bridge itself (first in FORWARD)."""
    if not _iptables("-n", "-L", EGRESS_CHAIN, check=False):
        _iptables("-N", EGRESS_CHAIN)
        _iptables(
            "-A", EGRESS_CHAIN, "!", "-o", BRIDGE, "-j", "REJECT", "--reject-with", "icmp-net-unreachable"
        )
    jump = ["FORWARD", "-i", BRIDGE, "-j", EGRESS_CHAIN]
    rules = run(["iptables", "-w", "-S", "FORWARD"]).stdout.splitlines()
    if len(rules) > 1 and rules[1] == "-A " + " ".join(jump):
        return
    while _iptables("-D", *jump, check=False):
        pass
    _iptables("-I", *jump[:1], "1", *jump[1:])


# -- the kubelet -----------------------------------------------------------------------
def kubelet_config(layout: Layout, ports: Ports) -> dict[str, object]:
    pki = layout.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": HOST_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki.crt("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.pod_logs),
        # This machine: cgroup v1, no systemd, swap allowed, no host resolver to copy.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "resolvConf": "",
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # A busy developer disk must not taint the node with DiskPressure.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusUpdateFrequency": "5s",
    }


def start_kubelet(ctx: Context, layout: Layout, ports: Ports) -> None:
    config = layout.config / "kubelet.json"
    config.write_text(json.dumps(kubelet_config(layout, ports), indent=2))
    kubeconfig = layout.pki.kubeconfig(layout.config / "kubelet.kubeconfig", KUBELET, ports.apiserver_url)
    layout.kubelet_dir.mkdir(parents=True, exist_ok=True)
    start_daemon(
        ctx,
        KUBELET_DAEMON,
        [
            str(k8s_bin(ctx, "kubelet")),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={layout.kubelet_dir}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={HOST_IP}",
        ],
    )


def sweep_pods(ctx: Context, layout: Layout) -> None:
    """Stop and remove every pod sandbox (CNI DEL for each) while containerd still runs."""
    if running_containerd_socket(ctx) is None:
        return
    proc = run(
        [str(local_bin(ctx, "crisweep")), f"unix://{layout.containerd_socket}"],
        log=ctx.logfile("crisweep"),
        check=False,
        timeout=180,
    )
    if proc.returncode != 0:
        raise TestenvError("could not remove every pod sandbox", ctx.logfile("crisweep"))


def remove_stale_shim_sockets() -> None:
    """containerd's shims keep their sockets in /run/containerd/s whatever the config
    says, and a killed shim leaves its socket behind. Remove the sockets no process is
    listening on (never a live shim's, ours or a system containerd's), then the
    directories if that left them empty."""
    shim_dir = Path("/run/containerd/s")
    if not shim_dir.is_dir():
        return
    listening = {
        line.split()[-1]
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]
        if len(line.split()) >= 8
    }
    for socket_file in shim_dir.iterdir():
        if socket_file.is_socket() and str(socket_file) not in listening:
            socket_file.unlink(missing_ok=True)
    for directory in (shim_dir, shim_dir.parent):
        try:
            directory.rmdir()
        except OSError:
            return


def remove_container_log_links(layout: Layout) -> None:
    """The kubelet links each container's log into /var/log/containers (a fixed path)."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        try:
            if link.is_symlink() and str(link.readlink()).startswith(str(layout.pod_logs)):
                link.unlink()
        except OSError:
            pass
