"""The Deployment of a FlowWorkerPool: `flowkit worker` pods configured from the pool and
the operator. Pure: a pool body and the operator's settings in, a manifest out."""

from __future__ import annotations

from typing import Any

from .config import OperatorConfig
from .kube import API_VERSION, MANAGED_BY

POOL_LABEL = "flowkit.io/pool"
CONTAINER = "worker"
DRAIN_ENV = "FLOWKIT_WORKER_DRAIN_TIMEOUT_SEC"
GRACE_MARGIN_SEC = 10
"""Time past the drain for handing unfinished attempts back and closing connections."""
UID = 10001


def deployment_name(pool: str) -> str:
    return f"{pool}-workers"


def pod_labels(pool: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "flowkit-worker", "app.kubernetes.io/instance": pool, POOL_LABEL: pool}


def _drain_seconds(user_env: list[dict[str, Any]], default: float) -> float:
    for item in user_env:
        if item.get("name") == DRAIN_ENV and item.get("value") not in (None, ""):
            try:
                return max(0.0, float(item["value"]))
            except (TypeError, ValueError):
                break
    return default


def _connection_env(cfg: OperatorConfig, drain: float) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FLOWKIT_KAFKA_BOOTSTRAP", "value": cfg.kafka_bootstrap_for_workers},
        {"name": "FLOWKIT_TOPIC_PREFIX", "value": cfg.coordinator.topic_prefix},
    ]
    if cfg.mongo_secret:
        env.append(
            {
                "name": "FLOWKIT_MONGO_URL",
                "valueFrom": {"secretKeyRef": {"name": cfg.mongo_secret, "key": cfg.mongo_secret_key}},
            }
        )
    else:
        env.append({"name": "FLOWKIT_MONGO_URL", "value": cfg.mongo_url_for_workers})
    env.append({"name": DRAIN_ENV, "value": f"{drain:g}"})
    return env


WORKER_HEALTH_PORT = 8080


def _probe(path: str, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "health"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }


def deployment(pool: Any, cfg: OperatorConfig) -> dict[str, Any]:
    """The Deployment the operator applies for ``pool`` (server-side apply, owned by the pool)."""
    meta, spec = pool["metadata"], pool.get("spec") or {}
    name = str(meta["name"])
    user_env: list[dict[str, Any]] = list(spec.get("env") or [])
    drain = _drain_seconds(user_env, cfg.worker_drain_timeout_sec)
    mine = [e for e in _connection_env(cfg, drain) if e["name"] not in {u.get("name") for u in user_env}]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.get("image") or cfg.worker_image,
        "command": ["flowkit"],
        "args": [
            "worker",
            "--roles",
            ",".join(spec["roles"]),
            "--handlers",
            spec["handlers"],
            "--capacity",
            str(int(spec.get("capacity") or 4)),
            "--health-port",
            str(WORKER_HEALTH_PORT),
        ],
        "ports": [{"name": "health", "containerPort": WORKER_HEALTH_PORT}],
        # Ready: taking work (not while draining); alive: its duties run. Neither asks
        # Kafka or MongoDB, so an outage of theirs restarts no worker.
        "readinessProbe": _probe("/readyz", period=5),
        "livenessProbe": _probe("/healthz", period=10),
        "env": mine + user_env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pull = spec.get("imagePullPolicy") or cfg.worker_image_pull_policy
    if pull:
        container["imagePullPolicy"] = pull
    if spec.get("envFrom"):
        container["envFrom"] = list(spec["envFrom"])
    if spec.get("resources"):
        container["resources"] = dict(spec["resources"])
    labels = pod_labels(name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": meta["namespace"],
            "labels": {**labels, **MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": str(pool.get("apiVersion") or API_VERSION),
                    "kind": "FlowWorkerPool",
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": int(spec.get("minReplicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, **MANAGED_BY}},
                "spec": {
                    "terminationGracePeriodSeconds": int(drain) + GRACE_MARGIN_SEC,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
