"""Where the e2e suite runs: the test cluster's real node (scripts/testenv) or kind.

`FLOWKIT_E2E_CLUSTER` picks one (`test-node` or `kind`); unset, the suite is collected
for both and the kind variant runs only where Docker and kind are installed. This
machine has no Docker engine, so here kind is skipped (with that reason) and the suite
runs on the test node, whose kubelet and containerd are as real as kind's (kind is
kubelet + containerd inside a Docker container; images arrive with `kind load` there,
with `scripts/testenv image build` here).

On kind, the cluster is `kind get kubeconfig --name $FLOWKIT_E2E_KIND_CLUSTER` (default
`kind`); Kafka and MongoDB by address come from `FLOWKIT_E2E_KAFKA_BOOTSTRAP` and
`FLOWKIT_E2E_MONGO_URL` (reachable from the pods and from this host, e.g. on the Docker
bridge), and the bundled mode uses the chart's default official images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTENV = REPO / "scripts" / "testenv"
SELECT = "FLOWKIT_E2E_CLUSTER"
TEST_NODE, KIND = "test-node", "kind"


def selected() -> list[str]:
    """The targets to collect: the one FLOWKIT_E2E_CLUSTER names, or both."""
    wanted = os.environ.get(SELECT, "").strip()
    if not wanted:
        return [TEST_NODE, KIND]
    if wanted not in (TEST_NODE, KIND):
        raise ValueError(f"{SELECT}={wanted!r}: choose {TEST_NODE!r} or {KIND!r}")
    return [wanted]


class Unavailable(Exception):
    """The target cannot run here; the message says why (a skip, or a failure in CI)."""


@dataclass
class Services:
    """Kafka and MongoDB by address: as the pods reach them, and as this host does."""

    kafka_for_pods: str
    kafka_for_host: str
    mongo_for_pods: str  # server URLs ending in "/"
    mongo_for_host: str


@dataclass
class Target:
    name: str
    kubeconfig: str
    kubectl: str
    helm: str
    readme_env: dict[str, str] = field(default_factory=dict)
    """Variables the README's commands read (its `KAFKA=...` lines) on this target."""
    readme_skips_eval: bool = False
    """The README's `eval "$(scripts/testenv env)"` is for the test cluster only."""

    def tool_env(self) -> dict[str, str]:
        """PATH with kubectl and helm first, KUBECONFIG: as the README's reader has them."""
        bins = {str(Path(self.kubectl).parent), str(Path(self.helm).parent)}
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PATH": os.pathsep.join([*sorted(bins), os.environ.get("PATH", "")]),
        }

    # Overridden per target.
    def flowkit_image(self) -> tuple[str, str]:
        raise NotImplementedError

    def build(self, ref: str, dockerfile: Path) -> None:
        """Build ``dockerfile`` (its folder is the context) as ``ref`` into the cluster's node."""
        raise NotImplementedError

    def services(self) -> Services:
        raise NotImplementedError

    def bundled_values(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class TestNodeTarget(Target):
    """scripts/testenv's cluster; `env` is what `scripts/testenv env` prints."""

    env: dict[str, str] = field(default_factory=dict)
    build_image: Any = None  # tests/cluster/conftest.build_image

    def flowkit_image(self) -> tuple[str, str]:
        from cluster.conftest import FLOWKIT_IMAGE  # the tag tests/cluster builds too

        ref = self.build_image(FLOWKIT_IMAGE, REPO / "Dockerfile")
        repository, _, tag = ref.rpartition(":")
        return repository, tag

    def build(self, ref: str, dockerfile: Path) -> None:
        self.build_image(ref, dockerfile)

    def services(self) -> Services:
        return Services(
            kafka_for_pods=self.env["FLOWKIT_TEST_KAFKA_BOOTSTRAP_POD"],
            kafka_for_host=self.env["FLOWKIT_TEST_KAFKA_BOOTSTRAP"],
            mongo_for_pods=self.env["FLOWKIT_TEST_MONGO_URL_POD"],
            mongo_for_host=self.env["FLOWKIT_TEST_MONGO_URL"],
        )

    def bundled_values(self) -> dict[str, Any]:
        """Kafka from testenv's jars and FerretDB, built once (content-keyed) into the node."""
        proc = subprocess.run(
            [sys.executable, str(TESTENV), "image", "bundled"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
        if proc.returncode != 0:
            raise AssertionError(f"scripts/testenv image bundled failed:\n{proc.stderr[-4000:]}")
        values: dict[str, Any] = json.loads(proc.stdout)
        return values


def test_node(testenv: Any, build_image: Any) -> TestNodeTarget:
    env = testenv.require("kafka", "ferretdb", "tools", "cluster")
    return TestNodeTarget(
        name=TEST_NODE,
        kubeconfig=env["KUBECONFIG"],
        kubectl=env["FLOWKIT_KUBECTL"],
        helm=env["FLOWKIT_HELM"],
        env=env,
        build_image=build_image,
    )


@dataclass
class KindTarget(Target):
    cluster: str = "kind"

    def flowkit_image(self) -> tuple[str, str]:
        self.build("flowkit:e2e", REPO / "Dockerfile")
        return "flowkit", "e2e"

    def build(self, ref: str, dockerfile: Path) -> None:
        for argv in (
            ["docker", "build", "-t", ref, "-f", str(dockerfile), str(dockerfile.parent)],
            ["kind", "load", "docker-image", ref, "--name", self.cluster],
        ):
            proc = subprocess.run(
                argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800
            )
            if proc.returncode != 0:
                raise AssertionError(f"{' '.join(argv)} failed:\n{proc.stderr[-4000:]}")

    def services(self) -> Services:
        kafka, mongo = os.environ.get("FLOWKIT_E2E_KAFKA_BOOTSTRAP"), os.environ.get("FLOWKIT_E2E_MONGO_URL")
        if not (kafka and mongo):
            raise Unavailable(
                "on kind, set FLOWKIT_E2E_KAFKA_BOOTSTRAP and FLOWKIT_E2E_MONGO_URL"
                " (reachable from the pods and from this host)"
            )
        mongo = mongo.rstrip("/") + "/"
        return Services(
            kafka_for_pods=kafka, kafka_for_host=kafka, mongo_for_pods=mongo, mongo_for_host=mongo
        )

    def bundled_values(self) -> dict[str, Any]:
        return {"kafka": {"bundled": {"enabled": True}}, "mongodb": {"bundled": {"enabled": True}}}


INSTEAD = (
    f"; the suite runs on scripts/testenv's real node instead ({SELECT}=test-node), "
    "a kubelet + containerd node as kind's is, with images built by buildah into its containerd"
)


def kind() -> KindTarget:
    if shutil.which("docker") is None:
        raise Unavailable(
            "kind variant skipped: no `docker` command (kind runs its node in Docker)" + INSTEAD
        )
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        raise Unavailable(f"kind variant skipped: no Docker engine here (`docker info`: {why})" + INSTEAD)
    missing = [tool for tool in ("kind", "kubectl", "helm") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"kind variant skipped: {', '.join(missing)} not on PATH" + INSTEAD)
    name = os.environ.get("FLOWKIT_E2E_KIND_CLUSTER", "kind")
    proc = subprocess.run(
        ["kind", "get", "kubeconfig", "--name", name],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise Unavailable(
            f"kind variant skipped: no kind cluster {name!r} (kind create cluster --name {name})"
        )
    path = Path(tempfile.mkdtemp(prefix="flowkit-e2e-kind-")) / "kubeconfig"
    path.write_text(proc.stdout)
    target = KindTarget(
        name=KIND,
        kubeconfig=str(path),
        kubectl=str(shutil.which("kubectl")),
        helm=str(shutil.which("helm")),
        readme_skips_eval=True,
        cluster=name,
    )
    try:
        services = target.services()
    except Unavailable:
        return target  # the bundled mode still runs
    target.readme_env = {
        "FLOWKIT_TEST_KAFKA_BOOTSTRAP_POD": services.kafka_for_pods,
        "FLOWKIT_TEST_MONGO_URL_POD": services.mongo_for_pods,
    }
    return target
