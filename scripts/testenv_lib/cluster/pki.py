"""Certificates and kubeconfigs for one cluster run, made with the openssl CLI.

One CA signs everything: serving certs for the API server and the kubelet, and one
client cert per component, each with the identity RBAC's default bindings expect
(`system:kube-controller-manager`, `system:node:<node>` for the Node authorizer, ...).
EC P-256 keys: the whole set takes about a second.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from ..common import HOST_IP, KUBERNETES_SERVICE_IP, TestenvError, require_tool, run

NODE_NAME = "flowkit-node"
CLUSTER_DOMAIN = "cluster.local"
_DAYS = "365"


@dataclass(frozen=True)
class Identity:
    """A client certificate: file stem, common name (user) and organisations (groups)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "flowkit-admin", ("system:masters",))
CONTROLLER_MANAGER = Identity("controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("scheduler", "system:kube-scheduler")
KUBELET = Identity("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",))
KUBE_PROXY = Identity("kube-proxy", "system:kube-proxy")
COREDNS = Identity("coredns", "flowkit:coredns")
APISERVER_KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
# The aggregation layer's proxy client: the only name trusted to assert X-Remote-User.
FRONT_PROXY_CLIENT = Identity("front-proxy-client", "front-proxy-client")
CLIENTS = (
    ADMIN,
    CONTROLLER_MANAGER,
    SCHEDULER,
    KUBELET,
    KUBE_PROXY,
    COREDNS,
    APISERVER_KUBELET_CLIENT,
    FRONT_PROXY_CLIENT,
)

APISERVER_SANS = (
    f"IP:{HOST_IP}",
    f"IP:{KUBERNETES_SERVICE_IP}",
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
)


class Pki:
    """The files under one directory: `<stem>.crt` / `<stem>.key`, plus `sa.key` / `sa.pub`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def crt(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    @property
    def ca(self) -> Path:
        return self.crt("ca")

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def ensure(self) -> None:
        """Make whatever is missing (a complete set is kept as it is)."""
        require_tool("openssl", "install Debian's openssl (apt-get install openssl)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not self.ca.exists():
            self._make_ca()
        self._make_leaf("apiserver", "kube-apiserver", (), "serverAuth", APISERVER_SANS)
        self._make_leaf(
            "kubelet-serving",
            f"system:node:{NODE_NAME}",
            ("system:nodes",),
            "serverAuth",
            (f"IP:{HOST_IP}", f"DNS:{NODE_NAME}"),
        )
        for identity in CLIENTS:
            self._make_leaf(identity.stem, identity.user, identity.groups, "clientAuth", ())
        if not self.sa_key.exists():
            self._openssl(
                "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(self.sa_key)
            )
            self._openssl("pkey", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub))

    def _make_ca(self) -> None:
        self._openssl(
            "req",
            "-x509",
            "-new",
            *self._new_key("ca"),
            "-out",
            str(self.ca),
            "-days",
            _DAYS,
            "-subj",
            "/CN=flowkit-testenv-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )

    def _make_leaf(
        self, stem: str, cn: str, groups: tuple[str, ...], usage: str, sans: tuple[str, ...]
    ) -> None:
        if self.crt(stem).exists() and self.key(stem).exists():
            return
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={cn}"
        extensions = [
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext",
            f"extendedKeyUsage={usage}",
        ]
        if sans:
            extensions += ["-addext", "subjectAltName=" + ",".join(sans)]
        self._openssl(
            "req",
            "-x509",
            "-new",
            *self._new_key(stem),
            "-out",
            str(self.crt(stem)),
            "-days",
            _DAYS,
            "-subj",
            subject,
            "-CA",
            str(self.ca),
            "-CAkey",
            str(self.key("ca")),
            *extensions,
        )

    def _new_key(self, stem: str) -> list[str]:
        return [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(self.key(stem)),
        ]

    def _openssl(self, *args: str) -> None:
        proc = run(["openssl", *args], check=False)
        if proc.returncode != 0:
            raise TestenvError(f"openssl {args[0]} failed in {self.dir}: {proc.stderr.strip()}")

    def kubeconfig(self, path: Path, identity: Identity, server: str) -> Path:
        """A self-contained kubeconfig (certificates embedded) for `identity`."""
        path.write_text(
            render_kubeconfig(
                server,
                self.ca.read_bytes(),
                self.crt(identity.stem).read_bytes(),
                self.key(identity.stem).read_bytes(),
                identity.user,
            )
        )
        path.chmod(0o600)
        return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render_kubeconfig(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: flowkit-testenv
  cluster:
    server: {server}
    certificate-authority-data: {_b64(ca)}
users:
- name: {user}
  user:
    client-certificate-data: {_b64(cert)}
    client-key-data: {_b64(key)}
contexts:
- name: flowkit-testenv
  context:
    cluster: flowkit-testenv
    user: {user}
current-context: flowkit-testenv
"""
