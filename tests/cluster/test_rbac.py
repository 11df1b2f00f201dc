"""ServiceAccounts and RBAC: refused without a RoleBinding, allowed with one, both with a
token from `kubectl create token` and from inside a pod through the `kubernetes` Service."""

from __future__ import annotations

import json
from pathlib import Path

from .kube import Kubectl, run_pod, wait_for

READ_PODS_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "pod-reader"},
    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
}


def _binding(namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "reader-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }


def _token_kubeconfig(kubectl: Kubectl, token: str, path: Path) -> Path:
    """A kubeconfig with the API server and CA of the admin one, but only a bearer token."""
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json"))
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "reader"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_service_account_token_is_refused_without_a_rolebinding_and_allowed_with_one(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "reader")
    token = kubectl("create", "token", "reader", "--duration=10m").strip()
    as_reader = Kubectl(
        kubectl.binary, str(_token_kubeconfig(kubectl, token, tmp_path / "reader")), namespace
    )

    assert (
        as_reader("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        == f"system:serviceaccount:{namespace}:reader"
    )
    refused = as_reader.run("get", "pods", check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr

    kubectl.apply(READ_PODS_ROLE, _binding(namespace))
    wait_for(
        lambda: as_reader.run("get", "pods", check=False).returncode == 0, 20, "the RoleBinding to apply"
    )
    assert as_reader.run("get", "pods", "-n", "default", check=False).returncode != 0  # only its namespace


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service_with_its_own_account(
    kubectl: Kubectl, namespace: str, smoke_image: str
) -> None:
    kubectl("create", "serviceaccount", "reader")
    kubectl.apply(run_pod("before", smoke_image, ["list-pods", namespace], serviceAccountName="reader"))
    assert kubectl.pod_logs_after_success("before").strip() == "api-status=403"

    kubectl.apply(READ_PODS_ROLE, _binding(namespace))
    kubectl.apply(run_pod("after", smoke_image, ["list-pods", namespace], serviceAccountName="reader"))
    assert kubectl.pod_logs_after_success("after").strip() == "api-status=200"
