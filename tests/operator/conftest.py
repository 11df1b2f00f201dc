"""Fixtures for the operator tests: the cluster fixtures of tests/cluster (a namespace and
kubectl per test, the project image), the CRDs of crds/ applied once, a database and
topic prefix per test, the operator in-process and a real `flowkit worker` process."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cluster.conftest import admin_kubectl, cluster_env, flowkit_image, kubectl, namespace  # noqa: E402, F401
from cluster.kube import Kubectl  # noqa: E402
from operator_support import OperatorThread, WorkerProcess, operator_config  # noqa: E402


@pytest.fixture(scope="session")
def crds(admin_kubectl: Kubectl) -> None:  # noqa: F811
    """crds/ applied (server-side, so it is idempotent) and established."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        admin_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    admin_kubectl(
        "wait", "--for=condition=Established", "crd/flowtasks.flowkit.io", "crd/flowworkerpools.flowkit.io"
    )


@pytest.fixture
def store_name() -> str:
    return f"flowkit_op_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pod_store_url(testenv: Any, store_name: str) -> str:
    """``store_url``'s database as pods reach it."""
    return testenv.require("ferretdb")["FLOWKIT_TEST_MONGO_URL_POD"].rstrip("/") + "/" + store_name


@pytest.fixture
def store_url(mongo_url: str, store_name: str) -> Iterator[str]:
    """A MongoDB URL naming a fresh database (for this host's clients), dropped afterwards."""
    from pymongo import MongoClient

    name = store_name
    yield mongo_url.rstrip("/") + "/" + name
    client: Any = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    """A synchronous pymongo view of the test's database (to check what is stored)."""
    from pymongo import MongoClient

    client: Any = MongoClient(store_url, serverSelectionTimeoutMS=5000)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def make_operator(
    crds: None,
    kafka_bootstrap: str,
    kafka_topic_prefix: str,
    store_url: str,
    namespace: str,  # noqa: F811
    cluster_env: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """``make_operator(**settings)``: an operator on the test's namespace; all stopped at the end."""
    # The in-process operator logs in as a user's would: with $KUBECONFIG.
    monkeypatch.setenv("KUBECONFIG", cluster_env["KUBECONFIG"])
    running: list[OperatorThread] = []

    def make(**extra: Any) -> OperatorThread:
        cfg = operator_config(
            kafka=kafka_bootstrap,
            mongo_url=store_url,
            prefix=kafka_topic_prefix,
            namespace=namespace,
            **extra,
        )
        op = OperatorThread(cfg).start()
        running.append(op)
        return op

    yield make
    for op in running:
        op.stop()


@pytest.fixture
def operator(make_operator: Any) -> OperatorThread:
    op: OperatorThread = make_operator()
    return op


@pytest.fixture
def worker(kafka_bootstrap: str, kafka_topic_prefix: str, store_url: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(kafka=kafka_bootstrap, mongo_url=store_url, prefix=kafka_topic_prefix)
    yield proc
    output = proc.stop()
    if proc.proc.returncode not in (0, -15, 143):
        print(f"worker exited {proc.proc.returncode}:\n{output[-3000:]}")
