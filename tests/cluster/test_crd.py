"""A CustomResourceDefinition with a status subresource and printer columns."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest

from .kube import Kubectl, wait_for

GROUP = "smoke.flowkit.test"


@pytest.fixture
def widget_crd(admin_kubectl: Kubectl) -> Iterator[str]:
    """A namespaced `Widget` kind (unique per test), removed afterwards."""
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    name = f"{plural}.{GROUP}"
    admin_kubectl.apply(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": plural[:-1], "kind": f"Widget{plural[7:]}"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [
                            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        ],
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer", "minimum": 1}},
                                    },
                                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    admin_kubectl.wait(f"crd/{name}", "condition=Established", timeout=30)
    yield plural
    admin_kubectl("delete", "crd", name, "--wait=false")


def _widget(kind_plural: str, size: int) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": f"Widget{kind_plural[7:]}",
        "metadata": {"name": "w1"},
        "spec": {"size": size},
    }


def _patch_status(kubectl: Kubectl, crd: str, patch: str) -> None:
    kubectl("patch", f"{crd}/w1", "--subresource=status", "--type=merge", "-p", patch)


def test_kubectl_get_shows_the_printer_columns(kubectl: Kubectl, widget_crd: str) -> None:
    kubectl.apply(_widget(widget_crd, 3))
    _patch_status(kubectl, widget_crd, '{"status":{"phase":"Ready"}}')
    header, row = kubectl("get", widget_crd).splitlines()
    assert header.split() == ["NAME", "SIZE", "PHASE"]
    assert row.split()[:3] == ["w1", "3", "Ready"]


def test_schema_validation_rejects_a_bad_spec(kubectl: Kubectl, widget_crd: str) -> None:
    proc = kubectl.run("apply", "-f", "-", input=json.dumps(_widget(widget_crd, 0)), check=False)
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr and "should be greater than or equal to 1" in proc.stderr


def test_a_watch_sees_a_status_change(kubectl: Kubectl, widget_crd: str) -> None:
    kubectl.apply(_widget(widget_crd, 1))
    watch = subprocess.Popen(
        [
            kubectl.binary,
            f"--kubeconfig={kubectl.kubeconfig}",
            f"--namespace={kubectl.namespace}",
            "get",
            f"{widget_crd}/w1",
            "--watch",
            "--output-watch-events",
            "-o",
            'jsonpath={.type} {.object.status.phase}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(
            lambda: any(line.startswith("ADDED") for line in lines), 20, "the watch's initial ADDED event"
        )
        _patch_status(kubectl, widget_crd, '{"status":{"phase":"Done"}}')
        wait_for(lambda: "MODIFIED Done\n" in lines, 20, f"a MODIFIED event with phase Done (saw {lines})")
    finally:
        watch.terminate()
        watch.wait(timeout=10)


def test_the_status_subresource_ignores_spec_changes(kubectl: Kubectl, widget_crd: str) -> None:
    kubectl.apply(_widget(widget_crd, 2))
    _patch_status(kubectl, widget_crd, '{"spec":{"size":9},"status":{"phase":"Busy"}}')
    widget = kubectl.json(f"{widget_crd}/w1")
    assert widget["spec"]["size"] == 2
    assert widget["status"]["phase"] == "Busy"
