"""Pod network, ClusterIP Services and cluster DNS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from .kube import Kubectl, run_pod


def _web(image: str) -> list[dict[str, object]]:
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["serve", "8080"],
                                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]


def test_a_pod_resolves_a_service_name_and_reaches_its_cluster_ip(
    kubectl: Kubectl, namespace: str, smoke_image: str
) -> None:
    kubectl.apply(*_web(smoke_image))
    kubectl.wait("deployment/web", "condition=Available")
    cluster_ip = kubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")

    kubectl.apply(run_pod("resolve", smoke_image, ["resolve", f"web.{namespace}.svc.cluster.local"]))
    assert kubectl.pod_logs_after_success("resolve").split() == [
        f"web.{namespace}.svc.cluster.local",
        "->",
        cluster_ip,
    ]
    kubectl.apply(run_pod("client", smoke_image, ["get", "http://web/"]))  # short name: the search path
    assert kubectl.pod_logs_after_success("client").startswith("status=200 body=hello from web-")


@pytest.fixture
def host_listener(host_ip: str) -> Iterator[int]:
    """An HTTP server on the host, on the bridge's gateway address (as Kafka and FerretDB)."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b"from host\n\n")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer((host_ip, 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_pod_reaches_a_host_service_on_the_bridge_gateway_address(
    kubectl: Kubectl, smoke_image: str, host_ip: str, host_listener: int
) -> None:
    kubectl.apply(run_pod("to-host", smoke_image, ["get", f"http://{host_ip}:{host_listener}/"]))
    assert kubectl.pod_logs_after_success("to-host").strip() == "status=200 body=from host"
