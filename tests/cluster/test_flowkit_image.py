"""The project's own image, built from its Dockerfile, runs FlowKit on the cluster's node."""

from __future__ import annotations

import json
from typing import Any

from .kube import Kubectl, run_pod


def test_the_flowkit_image_runs_the_example_pipeline_in_a_pod(kubectl: Kubectl, flowkit_image: str) -> None:
    args = ["run", "examples/etl/pipeline.yaml", "--handlers", "examples.etl.handlers:HANDLERS", "--json"]
    kubectl.apply(run_pod("etl", flowkit_image, args))
    status: dict[str, Any] = json.loads(kubectl.pod_logs_after_success("etl", timeout=120))
    assert status["status"] == "finished"
    assert status["nodes"]["load"]["metrics"]["loaded"] == status["nodes"]["extract"]["metrics"]["orders"]
    assert status["nodes"]["fetch_rates"]["attempts"] == 2


def test_the_flowkit_image_runs_as_a_non_root_user(kubectl: Kubectl, flowkit_image: str) -> None:
    pod = run_pod("whoami", flowkit_image, [])
    pod["spec"]["containers"][0]["command"] = [
        "python3",
        "-c",
        "import os, flowkit; print(os.getuid(), flowkit.__version__)",
    ]
    kubectl.apply(pod)
    uid, version = kubectl.pod_logs_after_success("whoami").split()
    assert uid == "10001"
    assert version


def test_the_flowkit_image_imports_the_operator_and_the_example_handlers_from_any_directory(
    kubectl: Kubectl, flowkit_image: str
) -> None:
    pod = run_pod("imports", flowkit_image, [])
    pod["spec"]["containers"][0]["command"] = [
        "python3",
        "-c",
        "import shutil, flowkit_operator, examples.etl.handlers as h;"
        " print(sorted(h.HANDLERS), shutil.which('flowkit-operator') is not None)",
    ]
    pod["spec"]["containers"][0]["workingDir"] = "/"
    kubectl.apply(pod)
    roles, has_operator_command = kubectl.pod_logs_after_success("imports").strip().rsplit(" ", 1)
    assert roles == "['extractor', 'loader', 'rates', 'transformer']"
    assert has_operator_command == "True"
