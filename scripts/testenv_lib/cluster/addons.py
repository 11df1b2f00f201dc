"""What makes the bare control plane a usable cluster: RBAC for our components,
kube-proxy, and cluster DNS.

CoreDNS runs on the host, bound to HOST_IP:53, behind the selector-less Service
kube-system/kube-dns (DNS_SERVICE_IP) whose EndpointSlice we write by hand. It has no
`forward` plugin: there is no outside resolver to forward to, and names outside the
cluster domain fail at once.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

from ..common import DNS_SERVICE_IP, HOST_IP, POD_CIDR, Context, TestenvError, run, start_daemon, wait_until
from .build import coredns_bin, k8s_bin
from .layout import Layout, Ports
from .pki import APISERVER_KUBELET_CLIENT, CLUSTER_DOMAIN, COREDNS, KUBE_PROXY, NODE_NAME

KUBE_PROXY_DAEMON = "kube-proxy"
COREDNS_DAEMON = "coredns"
_MANAGED_BY = "flowkit-testenv"


def kubectl(ctx: Context, layout: Layout, *args: str, stdin: str | None = None) -> str:
    """The cluster's kubectl as admin; raises TestenvError with kubectl's message."""
    proc = subprocess.run(
        [str(k8s_bin(ctx, "kubectl")), f"--kubeconfig={layout.admin_kubeconfig}", *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise TestenvError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _list(*items: dict[str, object]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


def bootstrap_objects() -> str:
    """RBAC for the API server's kubelet client and CoreDNS; the kube-dns Service; the
    local-images-only policy."""
    return _list(
        *_local_images_only(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "flowkit:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": APISERVER_KUBELET_CLIENT.user,
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "flowkit:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "flowkit:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "flowkit:coredns",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS.user}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "app.kubernetes.io/managed-by": _MANAGED_BY},
            },
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            # No selector on the Service, so no controller writes its endpoints: this one
            # points at CoreDNS on the host.
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": _MANAGED_BY,
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [HOST_IP], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    )


# Every container of every pod gets `imagePullPolicy: Never`: images come from
# `scripts/testenv image build|load` only, and a pod naming an image the node lacks
# fails with ErrImageNeverPull instead of containerd dialling a registry off this machine.
_NEVER_PULL = """
Object{
  spec: Object.spec{
    containers: object.spec.containers.map(c,
      Object.spec.containers{name: c.name, imagePullPolicy: "Never"}),
    ?initContainers: has(object.spec.initContainers)
      ? optional.of(object.spec.initContainers.map(c,
          Object.spec.initContainers{name: c.name, imagePullPolicy: "Never"}))
      : optional.none()
  }
}
"""
LOCAL_IMAGES_POLICY = "flowkit-local-images-only"


def _local_images_only() -> list[dict[str, object]]:
    admission = "admissionregistration.k8s.io/v1"
    policy: dict[str, object] = {
        "apiVersion": admission,
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": LOCAL_IMAGES_POLICY},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "mutations": [
                {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": _NEVER_PULL}}
            ],
        },
    }
    binding: dict[str, object] = {
        "apiVersion": admission,
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": LOCAL_IMAGES_POLICY},
        "spec": {"policyName": LOCAL_IMAGES_POLICY},
    }
    return [policy, binding]


def pods_never_pull(ctx: Context, layout: Layout) -> bool:
    """Whether the API server already applies the policy (a server-side dry run)."""
    try:
        policy = kubectl(
            ctx,
            layout,
            "run",
            "never-pull-check",
            "--image=registry.invalid/check:1",
            "--restart=Never",
            "--dry-run=server",
            "-o",
            "jsonpath={.spec.containers[0].imagePullPolicy}",
        )
    except TestenvError:
        return False
    return policy == "Never"


def apply_bootstrap_objects(ctx: Context, layout: Layout) -> None:
    kubectl(
        ctx,
        layout,
        "apply",
        "--server-side",
        "--field-manager",
        _MANAGED_BY,
        "-f",
        "-",
        stdin=bootstrap_objects(),
    )


# -- kube-proxy --------------------------------------------------------------------
def start_kube_proxy(ctx: Context, layout: Layout, ports: Ports) -> None:
    kubeconfig = layout.pki.kubeconfig(
        layout.config / "kube-proxy.kubeconfig", KUBE_PROXY, ports.apiserver_url
    )
    start_daemon(
        ctx,
        KUBE_PROXY_DAEMON,
        [
            str(k8s_bin(ctx, "kube-proxy")),
            f"--kubeconfig={kubeconfig}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={POD_CIDR}",
            f"--hostname-override={NODE_NAME}",
            # NodePorts on the node's address (HOST_IP) only, never the outside interface.
            "--nodeport-addresses=primary",
            f"--metrics-bind-address=127.0.0.1:{ports.kube_proxy_metrics}",
            f"--healthz-bind-address=127.0.0.1:{ports.kube_proxy_healthz}",
            # Leave the host's conntrack settings as they are.
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
        ],
    )
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{ports.kube_proxy_healthz}/healthz"),
        60,
        "kube-proxy",
        ctx.logfile(KUBE_PROXY_DAEMON),
        KUBE_PROXY_DAEMON,
        ctx,
    )


def cleanup_kube_proxy(ctx: Context) -> None:
    """Remove kube-proxy's iptables (and nftables) rules; safe when there are none."""
    binary = k8s_bin(ctx, "kube-proxy")
    if binary.exists():
        run([str(binary), "--cleanup"], log=ctx.logfile(KUBE_PROXY_DAEMON), check=False, timeout=60)


# -- CoreDNS ---------------------------------------------------------------------------
def corefile(layout: Layout, ports: Ports) -> str:
    kubeconfig = layout.config / "coredns.kubeconfig"
    return f""".:53 {{
    bind {HOST_IP}
    errors
    health 127.0.0.1:{ports.coredns_health}
    ready 127.0.0.1:{ports.coredns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} flowkit-testenv
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
    loadbalance
}}
"""


def start_coredns(ctx: Context, layout: Layout, ports: Ports) -> None:
    layout.pki.kubeconfig(layout.config / "coredns.kubeconfig", COREDNS, ports.apiserver_url)
    config = layout.config / "Corefile"
    config.write_text(corefile(layout, ports))
    start_daemon(ctx, COREDNS_DAEMON, [str(coredns_bin(ctx)), "-conf", str(config)])
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{ports.coredns_ready}/ready"),
        60,
        "CoreDNS",
        ctx.logfile(COREDNS_DAEMON),
        COREDNS_DAEMON,
        ctx,
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
