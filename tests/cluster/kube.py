"""Helpers for the cluster tests: the cluster's kubectl, waiting with a deadline, pod specs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTENV = Path(__file__).resolve().parents[2] / "scripts" / "testenv"


@dataclass
class Kubectl:
    """Runs the cluster's own kubectl with the admin kubeconfig, in one namespace."""

    binary: str
    kubeconfig: str
    namespace: str | None = None

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}"]
        if self.namespace is not None:
            argv.append(f"--namespace={self.namespace}")
        proc = subprocess.run(
            [*argv, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return self.run(*args, input=input, timeout=timeout).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json"))

    def run_dry(self, *args: str) -> Any:
        """A command's object as the API server would store it (`--dry-run=server`)."""
        return json.loads(self(*args, "--dry-run=server", "-o", "json"))

    def apply(self, *objects: dict[str, Any]) -> None:
        self(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        )

    def wait(self, target: str, condition: str, timeout: int = 90) -> None:
        self("wait", target, f"--for={condition}", f"--timeout={timeout}s", timeout=timeout + 30)

    def pod_logs_after_success(self, pod: str, timeout: int = 90) -> str:
        """Wait for a run-to-completion pod to succeed, then return its logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = self("get", "pod", pod, "-o", "jsonpath={.status.phase}")
            if phase == "Succeeded":
                return self("logs", pod)
            if phase == "Failed":
                raise AssertionError(
                    f"pod {pod} failed:\n{self.run('logs', pod, check=False).stdout}"
                    f"\n{self('describe', 'pod', pod)}"
                )
            time.sleep(0.5)
        raise AssertionError(f"pod {pod} did not finish in {timeout}s:\n{self('describe', 'pod', pod)}")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true, or fail naming `what` (no bare sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_pod(name: str, image: str, args: list[str], **spec: Any) -> dict[str, Any]:
    """A run-to-completion pod of a local image."""
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", "args": args}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


CLUSTER_COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "coredns",
)
"""The processes scripts/testenv runs for the cluster (their pid files and logs are named so)."""
