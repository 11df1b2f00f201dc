"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

etcd is the one built by `etcd.py` (3.6: Debian's 3.4 lacks the progress notifications
that the API server's watch-list needs).

etcd and the two controllers listen on 127.0.0.1 only. The API server is bound to and
advertises HOST_IP (the pod bridge's gateway), so the default endpoint reconciler
points the `kubernetes` Service there and pods reach it with their ServiceAccount.
"""

from __future__ import annotations

import functools
import json
import ssl
import urllib.error
import urllib.request

from ..common import HOST_IP, SERVICE_CIDR, Context, start_daemon, wait_until
from .build import k8s_bin
from .etcd import etcd_bin
from .layout import Layout, Ports
from .pki import ADMIN, CLUSTER_DOMAIN, CONTROLLER_MANAGER, FRONT_PROXY_CLIENT, SCHEDULER, Pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER_DAEMON = "kube-controller-manager"
SCHEDULER_DAEMON = "kube-scheduler"
DAEMONS = (ETCD, APISERVER, CONTROLLER_MANAGER_DAEMON, SCHEDULER_DAEMON)
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"


def start_etcd(ctx: Context, layout: Layout, ports: Ports) -> None:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    start_daemon(
        ctx,
        ETCD,
        [
            str(etcd_bin(ctx)),
            "--name",
            "flowkit",
            "--data-dir",
            str(layout.etcd_data),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"flowkit={peer}",
            "--initial-cluster-state",
            "new",
        ],
    )
    wait_until(lambda: _etcd_healthy(ports), 30, "etcd", ctx.logfile(ETCD), ETCD, ctx)


def _etcd_healthy(ports: Ports) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.etcd_client}/health", timeout=1) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):
        return False


def start_apiserver(ctx: Context, layout: Layout, ports: Ports) -> None:
    pki = layout.pki
    start_daemon(
        ctx,
        APISERVER,
        [
            str(k8s_bin(ctx, "kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            f"--bind-address={HOST_IP}",
            f"--advertise-address={HOST_IP}",
            f"--secure-port={ports.apiserver}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--anonymous-auth=false",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={pki.ca}",
            "--kubelet-preferred-address-types=InternalIP",
            # Request-header authentication (the aggregation layer): without it the
            # controllers keep logging a missing client-ca in extension-apiserver-authentication.
            f"--requestheader-client-ca-file={pki.ca}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT.user}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.crt(FRONT_PROXY_CLIENT.stem)}",
            f"--proxy-client-key-file={pki.key(FRONT_PROXY_CLIENT.stem)}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={layout.config / 'apiserver-certs'}",
        ],
    )
    wait_until(lambda: api_ready(pki, ports), 60, "kube-apiserver", ctx.logfile(APISERVER), APISERVER, ctx)


def _admin_tls(pki: Pki) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=str(pki.ca))
    tls.load_cert_chain(str(pki.crt(ADMIN.stem)), str(pki.key(ADMIN.stem)))
    return tls


def api_ready(pki: Pki, ports: Ports) -> bool:
    try:
        request = urllib.request.urlopen(f"{ports.apiserver_url}/readyz", context=_admin_tls(pki), timeout=2)
        with request as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def start_controllers(ctx: Context, layout: Layout, ports: Ports) -> None:
    pki = layout.pki
    cm_kubeconfig = pki.kubeconfig(
        layout.config / "controller-manager.kubeconfig", CONTROLLER_MANAGER, ports.apiserver_url
    )
    start_daemon(
        ctx,
        CONTROLLER_MANAGER_DAEMON,
        [
            str(k8s_bin(ctx, "kube-controller-manager")),
            *_component_flags(cm_kubeconfig, ports.controller_manager),
            # Every default controller except nodeipam: the node's pod range is the CNI's.
            "--controllers=*,-nodeipam",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca}",
            f"--cluster-signing-cert-file={pki.ca}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={layout.config / 'controller-manager-certs'}",
        ],
    )
    sched_kubeconfig = pki.kubeconfig(layout.config / "scheduler.kubeconfig", SCHEDULER, ports.apiserver_url)
    start_daemon(
        ctx,
        SCHEDULER_DAEMON,
        [
            str(k8s_bin(ctx, "kube-scheduler")),
            *_component_flags(sched_kubeconfig, ports.scheduler),
        ],
    )
    for name, port in (
        (CONTROLLER_MANAGER_DAEMON, ports.controller_manager),
        (SCHEDULER_DAEMON, ports.scheduler),
    ):
        wait_until(functools.partial(_healthz_ok, port), 60, name, ctx.logfile(name), name, ctx)


def _component_flags(kubeconfig: object, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _healthz_ok(port: int) -> bool:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the component's self-signed serving cert, on loopback
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=tls, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
