"""FlowWorkerPools (Deployments of the project image on the test node), the probes, the settings."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from flowkit_operator.config import OperatorConfig
from operator_support import flowtask, reasons, wait_until

from flowkit.errors import ConfigError


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_answer_ok_while_everything_is_reachable(operator: Any) -> None:
    port = operator.call(lambda parts: parts.health.port)
    assert _get(port, "/healthz") == (200, "ok\n")
    assert _get(port, "/readyz") == (200, "ok\n")


def test_settings_come_from_the_environment() -> None:
    cfg = OperatorConfig.from_env(
        {
            "FLOWKIT_OPERATOR_NAMESPACES": "a, b",
            "FLOWKIT_OPERATOR_WORKER_IMAGE": "me/flowkit:1",
            "FLOWKIT_OPERATOR_MONGO_SECRET": "mongo",
            "FLOWKIT_OPERATOR_HEALTH_PORT": "9000",
        }
    )
    assert cfg.namespaces == ("a", "b") and cfg.worker_image == "me/flowkit:1"
    assert cfg.mongo_secret == "mongo" and cfg.mongo_secret_key == "url" and cfg.health_port == 9000
    with pytest.raises(ConfigError, match="FLOWKIT_OPERATOR_HEALTH_PORT"):
        OperatorConfig.from_env({"FLOWKIT_OPERATOR_HEALTH_PORT": "port"})
    with pytest.raises(ConfigError, match="PULL_POLICY"):
        OperatorConfig.from_env({"FLOWKIT_OPERATOR_WORKER_IMAGE_PULL_POLICY": "Sometimes"})


def _pool(name: str, handlers: str, roles: list[str], image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flowkit.io/v1alpha1",
        "kind": "FlowWorkerPool",
        "metadata": {"name": name},
        "spec": {"roles": roles, "handlers": handlers, "image": image, "imagePullPolicy": "Never", **spec},
    }


@pytest.fixture
def pool_operator(
    make_operator: Any, flowkit_image: str, kafka_env: dict[str, str], pod_store_url: str
) -> Any:
    return make_operator(
        worker_image=flowkit_image,
        worker_kafka_bootstrap=kafka_env["FLOWKIT_TEST_KAFKA_BOOTSTRAP_POD"],
        worker_mongo_url=pod_store_url,
    )


def test_a_pool_whose_handlers_cannot_be_imported_says_why(
    kubectl: Any, pool_operator: Any, flowkit_image: str
) -> None:
    kubectl.apply(_pool("broken", "bad.module:X", ["a"], flowkit_image, capacity=2))
    dep = wait_until(
        lambda: kubectl.run("get", "deploy", "broken-workers", "-o", "json", check=False).stdout,
        30,
        "the Deployment",
    )
    dep = json.loads(dep)
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "FlowWorkerPool"
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["flowkit"]
    assert container["args"] == [
        *("worker", "--roles", "a", "--handlers", "bad.module:X", "--capacity", "2", "--health-port", "8080")
    ]
    assert container["readinessProbe"]["httpGet"] | {"scheme": "HTTP"} == {
        "path": "/readyz",
        "port": "health",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 40
    env = {e["name"]: e for e in container["env"]}
    assert {"FLOWKIT_KAFKA_BOOTSTRAP", "FLOWKIT_TOPIC_PREFIX", "FLOWKIT_MONGO_URL"} <= set(env)

    def failing() -> Any:
        status = kubectl.json("fwp", "broken").get("status") or {}
        return status.get("reason") == "HandlersNotImportable" and status

    status = wait_until(failing, 120, "pool status HandlersNotImportable")
    assert "bad.module" in status["message"], status["message"]
    assert status["desiredReplicas"] == 1
    assert not status.get("readyReplicas")  # its probe never answered: not counted ready
    wait_until(
        lambda: "HandlersNotImportable" in reasons(kubectl, "broken"), 20, "a HandlersNotImportable event"
    )


def test_a_pool_runs_a_flowtask_and_follows_its_spec(
    kubectl: Any, pool_operator: Any, flowkit_image: str
) -> None:
    roles = ["extractor", "transformer", "loader", "rates"]
    kubectl.apply(_pool("etl", "examples.etl.handlers:HANDLERS", roles, flowkit_image, capacity=4))
    wait_until(
        lambda: (kubectl.json("fwp", "etl").get("status") or {}).get("readyReplicas") == 1,
        120,
        "one ready worker",
    )
    import yaml
    from operator_support import REPO

    graph = yaml.safe_load((REPO / "examples" / "etl" / "pipeline.yaml").read_text())
    kubectl.apply({**flowtask("etl-run", []), "spec": {"graph": graph}})
    kubectl.wait("ft/etl-run", "condition=Succeeded", timeout=120)
    assert kubectl.json("ft", "etl-run")["status"]["progress"] == "6/6"
    kubectl("patch", "fwp", "etl", "--type=merge", "-p", '{"spec": {"minReplicas": 2}}')
    wait_until(lambda: kubectl.json("deploy", "etl-workers")["spec"]["replicas"] == 2, 30, "2 replicas")
    wait_until(
        lambda: (kubectl.json("fwp", "etl").get("status") or {}).get("desiredReplicas") == 2,
        30,
        "desiredReplicas 2",
    )
