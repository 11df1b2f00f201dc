"""Every manifest helm/flowkit renders is accepted by the real API server
(`kubectl apply --dry-run=server`), in both modes, and passes Pod Security "restricted"."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kube import Kubectl
from .test_crds import flowkit_crds  # noqa: F401  (the session fixture installing crds/)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "flowkit"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}

pytestmark = pytest.mark.usefixtures("flowkit_crds")


@pytest.fixture
def restricted_namespace(kubectl: Kubectl, admin_kubectl: Kubectl) -> str:
    """The test's namespace, enforcing Pod Security "restricted" (warnings on workloads too)."""
    assert kubectl.namespace is not None
    admin_kubectl("label", "namespace", kubectl.namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    return kubectl.namespace


@pytest.fixture
def other_namespace(admin_kubectl: Kubectl) -> Iterator[str]:
    name = f"t-chart-watched-{uuid.uuid4().hex[:6]}"
    admin_kubectl("create", "namespace", name)
    yield name
    admin_kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def helm_template(helm: str, tmp_path: Path, namespace: str, *args: str) -> str:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    release = f"fk{uuid.uuid4().hex[:6]}"  # cluster-scoped RBAC names never collide with other tests
    proc = subprocess.run(
        [helm, "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def dry_run(admin_kubectl: Kubectl, manifests: str) -> subprocess.CompletedProcess[str]:
    """Server dry run as admin: the manifests name their namespaces (RBAC in several)."""
    proc = admin_kubectl.run("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert proc.returncode == 0, f"refused by the API server:\n{proc.stderr}"
    return proc


def test_the_external_services_mode_is_accepted_by_the_api_server(
    admin_kubectl: Kubectl, helm: str, tmp_path: Path, restricted_namespace: str
) -> None:
    out = helm_template(
        helm, tmp_path, restricted_namespace, "-f", str(CHART / "ci" / "external-values.yaml")
    )
    proc = dry_run(admin_kubectl, out)
    created = proc.stdout.splitlines()
    assert len(created) == 6 and all("(server dry run)" in line for line in created), proc.stdout
    assert "PodSecurity" not in proc.stderr, proc.stderr


def test_the_bundled_mode_watching_two_namespaces_is_accepted_by_the_api_server(
    admin_kubectl: Kubectl, helm: str, tmp_path: Path, restricted_namespace: str, other_namespace: str
) -> None:
    out = helm_template(
        helm,
        tmp_path,
        restricted_namespace,
        "-f",
        str(CHART / "ci" / "bundled-values.yaml"),
        "--set-json",
        f'watchNamespaces=["{restricted_namespace}","{other_namespace}"]',
        "--set",
        "kafka.bundled.persistence.enabled=true",
    )
    proc = dry_run(admin_kubectl, out)
    created = proc.stdout.splitlines()
    assert sum(line.startswith("role.rbac") for line in created) == 2, proc.stdout
    assert sum(line.startswith("statefulset.apps") for line in created) == 2, proc.stdout
    assert "PodSecurity" not in proc.stderr, proc.stderr


def test_the_pod_security_check_does_catch_a_privileged_pod(
    kubectl: Kubectl, restricted_namespace: str
) -> None:
    # The check above can fail: the same dry run of a pod without the chart's contexts is refused.
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: loose}\n"
        "spec: {containers: [{name: main, image: flowkit:dev}]}\n"
    )
    proc = kubectl.run("apply", "--dry-run=server", "-f", "-", input=pod, check=False)
    assert proc.returncode != 0 and 'violates PodSecurity "restricted' in proc.stderr


@pytest.mark.parametrize("variable", ["FLOWKIT_HELM", "FLOWKIT_HELM3"], ids=["helm4", "helm3"])
def test_helm_install_dry_run_on_the_server_with_helm_4_and_3(
    testenv: Any, cluster_env: dict[str, str], tmp_path: Path, restricted_namespace: str, variable: str
) -> None:
    helm = testenv.require("tools")[variable]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECONFIG": cluster_env["KUBECONFIG"]}
    release = f"fk{uuid.uuid4().hex[:6]}"
    args = [helm, "install", release, str(CHART), "--namespace", restricted_namespace, "--dry-run=server"]
    args += ["-f", str(CHART / "ci" / "external-values.yaml")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "STATUS: pending-install" in proc.stdout, proc.stdout
    assert "kind: Deployment" in proc.stdout and "PodSecurity" not in proc.stderr, proc.stderr
