"""Pods really run on the node: a Deployment scaled 0 → 3 → 1, an image built from a
Dockerfile whose output `kubectl logs` shows, `kubectl exec`, and a helm release."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from .kube import Kubectl, run_pod, wait_for

POD_CIDR = ipaddress.ip_network("10.244.0.0/24")


def _deployment(name: str, image: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never"}],
                },
            },
        },
    }


def _pods(kubectl: Kubectl, selector: str) -> list[dict[str, object]]:
    return kubectl.json("pods", "-l", selector)["items"]  # type: ignore[no-any-return]


def _running(pod: dict[str, object]) -> bool:
    status = pod.get("status", {})
    assert isinstance(status, dict)
    statuses = status.get("containerStatuses") or []
    return status.get("phase") == "Running" and all("running" in c.get("state", {}) for c in statuses)


def test_deployment_scales_from_0_to_3_to_1_with_pods_really_running(
    kubectl: Kubectl, pause_image: str
) -> None:
    kubectl.apply(_deployment("scaler", pause_image, 0))
    assert _pods(kubectl, "app=scaler") == []

    kubectl("scale", "deployment/scaler", "--replicas=3")
    kubectl.wait("deployment/scaler", "jsonpath={.status.readyReplicas}=3")
    pods = _pods(kubectl, "app=scaler")
    assert len(pods) == 3 and all(_running(p) for p in pods)
    ips = {p["status"]["podIP"] for p in pods}  # type: ignore[index]
    assert len(ips) == 3 and all(ipaddress.ip_address(ip) in POD_CIDR for ip in ips)

    kubectl("scale", "deployment/scaler", "--replicas=1")
    wait_for(lambda: len(_pods(kubectl, "app=scaler")) == 1, 60, "two of the three pods to be gone")
    [survivor] = _pods(kubectl, "app=scaler")
    assert _running(survivor)


def test_pod_from_an_image_built_from_a_dockerfile_logs_its_output(
    kubectl: Kubectl, smoke_image: str
) -> None:
    kubectl.apply(run_pod("report", smoke_image, ["report"]))
    logs = kubectl.pod_logs_after_success("report")
    assert "flowkit-smoke python=3.11." in logs
    assert "six=1.17.0 uid=10001" in logs
    # The build saw the host's CA through a volume; the image keeps at most the empty
    # mount point, never the certificates.
    assert "host-ca-bytes=0" in logs


def test_kubectl_exec_runs_a_command_in_a_running_pod(kubectl: Kubectl, smoke_image: str) -> None:
    kubectl.apply(run_pod("server", smoke_image, ["serve", "8080"]))
    kubectl.wait("pod/server", "condition=Ready")
    out = kubectl("exec", "server", "--", "/opt/venv/bin/python", "-c", "import os; print(os.getuid())")
    assert out.strip() == "10001"


def test_helm_install_of_a_small_chart_runs_its_pod(
    kubectl: Kubectl, namespace: str, helm: str, pause_image: str, tmp_path: Path
) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(f"image: {pause_image}\n")
    (chart / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-tiny\n"
        "spec:\n  replicas: 1\n  selector:\n    matchLabels: {app: {{ .Release.Name }}-tiny}\n"
        "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}-tiny}\n"
        "    spec:\n      containers:\n      - name: main\n        image: {{ .Values.image }}\n"
        "        imagePullPolicy: Never\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECONFIG": kubectl.kubeconfig}
    install = subprocess.run(
        [helm, "install", "demo", str(chart), "--namespace", namespace, "--wait", "--timeout", "90s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
    )
    assert install.returncode == 0, install.stderr
    pods = _pods(kubectl, "app=demo-tiny")
    assert len(pods) == 1 and _running(pods[0])
    status = subprocess.run(
        [helm, "status", "demo", "--namespace", namespace, "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert '"status":"deployed"' in status.replace(" ", "")
