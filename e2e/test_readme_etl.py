"""The README's "On Kubernetes" commands work as written: the chart installed by address,
the example pool and ETL task applied with kubectl, `kubectl get ft -w` showing it reach
Succeeded 6/6 and `kubectl wait --for=condition=Succeeded` returning, while the worker
pods ran the handlers (the readme_release fixture runs the commands; the checks are here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from . import readme
from .release import Release


def test_the_readme_commands_run_the_etl_example_to_succeeded_6_of_6(readme_release: Release) -> None:
    watched: str = readme_release.watch_output  # type: ignore[attr-defined]
    assert "etl" in watched and "Succeeded" in watched, watched
    status = readme_release.status("etl")
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "6/6"
    assert status["nodeCounts"] == {"finished": 6}, status["nodeCounts"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["Failed"] == "False", conditions
    assert status["nodes"]["fetch_rates"]["attempts"] == 2  # the simulated timeout, retried


def test_the_worker_pods_ran_the_handlers(readme_release: Release) -> None:
    task_id = readme_release.status("etl")["taskId"]
    # fetch_rates times out on its first attempt: the worker pod that ran it says so.
    logs = readme_release.worker_logs()
    assert f"task {task_id} node fetch_rates attempt 1 failed" in logs, logs[-3000:]
    pods = readme_release.kubectl.json("pods", "-l", "app.kubernetes.io/name=flowkit-worker")["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
    # The node metrics the handlers reported, read from the store on this host.
    assert readme_release.mongo_url is not None
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "flowkit"),
            "status",
            task_id,
            "--json",
            "--mongo",
            readme_release.mongo_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWKIT_TOPIC_PREFIX": readme_release.topic_prefix},
    )
    assert proc.returncode == 0, proc.stderr
    nodes = json.loads(proc.stdout)["nodes"]
    assert nodes["extract"]["metrics"]["orders"] == 48
    assert nodes["load"]["metrics"]["loaded"] == 48
    assert nodes["fetch_rates"]["metrics"]["currencies"] == 3


def test_the_operator_runs_as_a_pod_under_its_own_service_account(readme_release: Release) -> None:
    kubectl = readme_release.kubectl
    pods = kubectl.json("pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert len(pods) == 1
    account = pods[0]["spec"]["serviceAccountName"]
    assert account != "default"
    who = f"--as=system:serviceaccount:{readme_release.namespace}:{account}"
    assert kubectl("auth", "can-i", "patch", "flowtasks.flowkit.io/status", who).strip() == "yes"
    assert kubectl("auth", "can-i", "create", "deployments.apps", who).strip() == "yes"
    # Least privilege: no Secrets, nothing in other namespaces (watchNamespaces).
    assert kubectl.run("auth", "can-i", "get", "secrets", who, check=False).stdout.strip() == "no"
    elsewhere = kubectl.run(
        "auth", "can-i", "list", "flowtasks.flowkit.io", who, "-n", "default", check=False
    )
    assert elsewhere.stdout.strip() == "no"


def test_the_readme_builds_the_image_the_install_uses() -> None:
    """The build block is not run as written (the session's image is built once, by the
    same `scripts/testenv image build`, under the test tag); it must name the install's tag."""
    text = readme.README.read_text()
    build = next(b for b in readme.section_blocks(text) if "image build" in b)
    assert "scripts/testenv image build --tag flowkit:dev" in build
    assert "docker build -t flowkit:dev . && kind load docker-image flowkit:dev" in build
    install = " ".join(readme.install_commands())
    assert "--set image.repository=flowkit --set image.tag=dev" in install
