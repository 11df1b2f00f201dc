"""The project's own image, built from its Dockerfile, runs FlowKit on the cluster's node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .kube import TESTENV, Kubectl, run_pod

REPO = Path(__file__).resolve().parents[2]
FLOWKIT_IMAGE = "flowkit-test/flowkit:dev"


@pytest.fixture(scope="session")
def flowkit_image(cluster_env: dict[str, str]) -> str:
    """The repository's Dockerfile built with `scripts/testenv image build` (once a session)."""
    proc = subprocess.run(
        [sys.executable, str(TESTENV), "image", "build", "--tag", FLOWKIT_IMAGE, str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the FlowKit image failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return FLOWKIT_IMAGE


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
