"""Where one cluster run keeps its files, and which ports it listens on.

Everything a run writes lives under `<run>/cluster/`, so that `down` (and the next
`up` after a killed run) can find every mount, process and file of ours by path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..common import HOST_IP, Context, free_port
from .pki import Pki

_PORTS_KEY = "cluster.ports"


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def of(cls, ctx: Context) -> Layout:
        return cls(ctx.run / "cluster")

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def config(self) -> Path:
        """Generated configuration files and the components' kubeconfigs."""
        return self.root / "config"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int  # on HOST_IP: the kubernetes Service's endpoint
    controller_manager: int
    scheduler: int
    kubelet: int  # on HOST_IP: the API server dials it for logs/exec
    kubelet_healthz: int
    kube_proxy_metrics: int
    kube_proxy_healthz: int
    coredns_health: int
    coredns_ready: int

    @classmethod
    def load_or_pick(cls, ctx: Context) -> Ports:
        saved = ctx.get(_PORTS_KEY)
        if isinstance(saved, dict):
            try:
                return cls(**{k: int(v) for k, v in saved.items()})
            except TypeError:
                pass  # a different version of this file wrote them: pick anew
        local = {name: free_port() for name in cls.__dataclass_fields__}
        ports = cls(**{**local, "apiserver": free_port(HOST_IP), "kubelet": free_port(HOST_IP)})
        ctx.put(_PORTS_KEY, asdict(ports))
        return ports

    @staticmethod
    def forget(ctx: Context) -> None:
        ctx.forget(_PORTS_KEY)

    @staticmethod
    def saved(ctx: Context) -> Ports | None:
        saved = ctx.get(_PORTS_KEY)
        if not isinstance(saved, dict):
            return None
        try:
            return Ports(**{k: int(v) for k, v in saved.items()})
        except TypeError:
            return None

    @property
    def apiserver_url(self) -> str:
        return f"https://{HOST_IP}:{self.apiserver}"
