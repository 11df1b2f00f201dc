"""One installation of the chart under test, and what the e2e tests ask of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cluster.kube import Kubectl

from .targets import Target

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "flowkit"
EXAMPLES = REPO / "examples" / "kubernetes"
API = "flowkit.io/v1alpha1"
TERMINAL = ("Succeeded", "Failed", "Cancelled", "Invalid")


@dataclass
class Release:
    """A helm release in its own namespace, with the store its operator uses."""

    name: str
    namespace: str
    helm: str
    kubectl: Kubectl  # bound to the namespace
    env: dict[str, str]  # KUBECONFIG, PATH: what helm and kubectl run with
    mongo_url: str | None = None  # with the database; None when the store is inside the cluster
    kafka_for_host: str | None = None
    topic_prefix: str = ""

    # -- helm ------------------------------------------------------------------------
    def install(self, *args: str, timeout: int = 300) -> None:
        self.helm_run(
            "install",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--create-namespace",
            "--wait",
            f"--timeout={timeout}s",
            *args,
            timeout=timeout + 60,
        )

    def helm_run(self, *args: str, timeout: int = 120) -> str:
        proc = subprocess.run(
            [self.helm, *args], capture_output=True, text=True, env=self.env, timeout=timeout, cwd=REPO
        )
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}\n{self.diagnostics()}")
        return proc.stdout

    def uninstall(self) -> None:
        subprocess.run(
            [self.helm, "uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout=120s"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
        )
        self.kubectl.run(
            "delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found", check=False
        )
        if self.mongo_url:
            from pymongo import MongoClient

            client: Any = MongoClient(self.mongo_url, serverSelectionTimeoutMS=5000)
            try:
                client.drop_database(client.get_default_database().name)
            finally:
                client.close()
        if self.kafka_for_host and self.topic_prefix:
            from flowkit.testing.distributed import drop_topics

            try:
                asyncio.run(drop_topics(self.kafka_for_host, self.topic_prefix))
            except Exception as exc:  # the broker may be what broke
                print(f"could not delete the topics of {self.topic_prefix}: {exc}")

    # -- objects ----------------------------------------------------------------------
    def apply_file(self, path: Path) -> None:
        self.kubectl("apply", "-f", str(path))

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl.run("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)

    def flowtask(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.kubectl.json("flowtask", name)
        return obj

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.flowtask(name).get("status") or {}
        return status

    def wait_status(self, name: str, what: str, check: Any, timeout: float = 180) -> dict[str, Any]:
        """Poll the FlowTask's status until `check(status)` holds; fail with the story."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if check(status):
                return status
            time.sleep(0.5)
        raise AssertionError(
            f"ft/{name}: no {what} within {timeout:.0f}s; status:\n{json.dumps(status, indent=1)}\n"
            f"{self.diagnostics()}"
        )

    def wait_phase(self, name: str, *phases: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait_status(
            name, f"phase {'/'.join(phases)}", lambda s: s.get("phase") in phases, timeout=timeout
        )

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "flowtask", name, "--type=merge", "-p", json.dumps({"spec": spec}))

    def worker_logs(self) -> str:
        return self.kubectl.run(
            "logs",
            "-l",
            "app.kubernetes.io/name=flowkit-worker",
            "--tail=-1",
            "--prefix",
            "--max-log-requests=10",
            check=False,
        ).stdout

    def store_task(self, task_id: str) -> dict[str, Any] | None:
        """The task as stored in MongoDB, read as `flowkit status` reads it (FlowKit's store)."""
        assert self.mongo_url, "this release's store is not reachable from the host"
        from pymongo import AsyncMongoClient

        from flowkit.store.mongo import MongoStore

        async def read() -> dict[str, Any] | None:
            client: Any = AsyncMongoClient(self.mongo_url, serverSelectionTimeoutMS=5000)
            try:
                status = await MongoStore(client.get_default_database()).get_task(task_id)
                return None if status is None else status.model_dump(mode="json")
            finally:
                await client.close()

        return asyncio.run(read())

    def diagnostics(self) -> str:
        """What a person would look at: the FlowTasks, pods, and the operator's log tail."""
        parts = []
        for args in (
            ("get", "ft,fwp,deploy,pods", "-o", "wide"),
            ("logs", "-l", "app.kubernetes.io/component=operator", "--tail=60"),
            ("get", "events", "--sort-by=.lastTimestamp"),
        ):
            proc = self.kubectl.run(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)


def flowtask(name: str, nodes: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "FlowTask",
        "metadata": {"name": name},
        "spec": {"graph": {"nodes": nodes}, **spec},
    }


def example(name: str) -> dict[str, Any]:
    """A manifest of examples/kubernetes/."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return manifest


def run_name() -> str:
    return f"e2e-{uuid.uuid4().hex[:6]}"


def new_release(target: Target, name: str, **fields: Any) -> Release:
    kubectl = Kubectl(target.kubectl, target.kubeconfig, name)
    return Release(
        name=name, namespace=name, helm=target.helm, kubectl=kubectl, env=target.tool_env(), **fields
    )
