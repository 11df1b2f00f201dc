"""Fixtures for the cluster smoke tests: a kubectl runner, a fresh namespace per test,
the smoke image built once per session.

The cluster itself comes from the session fixture `testenv` (tests/conftest.py):
`testenv.require("cluster")` runs `scripts/testenv up cluster` once and returns the
variables of `scripts/testenv env`.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kube import TESTENV, Kubectl

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMOKE_IMAGE = "flowkit-test/smoke:1"
FLOWKIT_IMAGE = "flowkit-test/flowkit:dev"
REPO = Path(__file__).resolve().parents[2]
# Tests with this marker stop and restart the cluster: they run after everything else.
RESTARTS_CLUSTER = "restarts_cluster"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{RESTARTS_CLUSTER}: stops the test cluster; runs last in the session"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker(RESTARTS_CLUSTER) is not None)


@pytest.fixture(scope="session")
def cluster_env(testenv: Any) -> dict[str, str]:
    """`scripts/testenv up cluster` once; its `env` variables (KUBECONFIG, FLOWKIT_KUBECTL, ...)."""
    env: dict[str, str] = testenv.require("cluster")
    return env


@pytest.fixture(scope="session")
def admin_kubectl(cluster_env: dict[str, str]) -> Kubectl:
    """Cluster-wide kubectl (no namespace)."""
    return Kubectl(cluster_env["FLOWKIT_KUBECTL"], cluster_env["KUBECONFIG"])


@pytest.fixture
def namespace(admin_kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, with its `default` ServiceAccount; deleted afterwards."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:30].strip("-")
    name = f"t-{test}-{uuid.uuid4().hex[:6]}"
    admin_kubectl("create", "namespace", name)
    admin_kubectl("wait", "--for=create", "serviceaccount/default", f"--namespace={name}", "--timeout=30s")
    yield name
    admin_kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def kubectl(admin_kubectl: Kubectl, namespace: str) -> Kubectl:
    """kubectl in the test's own namespace."""
    return Kubectl(admin_kubectl.binary, admin_kubectl.kubeconfig, namespace)


@pytest.fixture(scope="session")
def pause_image(cluster_env: dict[str, str]) -> str:
    """A tiny image on every node start: a process that just runs until stopped."""
    return cluster_env["FLOWKIT_TEST_PAUSE_IMAGE"]


@functools.cache
def build_image(tag: str, dockerfile: Path) -> str:
    """`scripts/testenv image build`: the image is in the node's containerd afterwards.
    Once per process: tests/cluster, tests/operator and e2e/ share each build."""
    proc = subprocess.run(
        [sys.executable, str(TESTENV), "image", "build", "--tag", tag, str(dockerfile)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"building {tag} from {dockerfile} failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return tag


@pytest.fixture(scope="session")
def smoke_image(cluster_env: dict[str, str]) -> str:
    """tests/cluster/fixtures/Dockerfile built once a session."""
    return build_image(SMOKE_IMAGE, FIXTURES / "Dockerfile")


@pytest.fixture(scope="session")
def flowkit_image(cluster_env: dict[str, str]) -> str:
    """The repository's own Dockerfile built once a session."""
    return build_image(FLOWKIT_IMAGE, REPO / "Dockerfile")
