"""The operator's settings, from the environment (docs/operator.md lists every variable).

The connection settings are the engine's own (:class:`flowkit.config.ConnectionSettings`:
``FLOWKIT_KAFKA_BOOTSTRAP``, ``FLOWKIT_MONGO_URL``, ``FLOWKIT_TOPIC_PREFIX``, SASL/TLS);
the coordinator's tunables are :class:`flowkit.config.CoordinatorConfig`'s
(``FLOWKIT_COORDINATOR_*``); the rest is ``FLOWKIT_OPERATOR_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from flowkit.config import CoordinatorConfig
from flowkit.errors import ConfigError

PREFIX = "FLOWKIT_OPERATOR_"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class OperatorConfig(BaseModel):
    """Everything the operator process is told (besides the coordinator's own settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinator: CoordinatorConfig = Field(default_factory=CoordinatorConfig)
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty: all of them (cluster-wide)."""
    worker_image: str = "flowkit:latest"
    worker_image_pull_policy: str | None = None
    worker_kafka_bootstrap: str | None = None
    """Kafka bootstrap the worker pods get (default: the operator's own). Differs when the
    operator reaches Kafka by another address than pods do (e.g. outside the cluster)."""
    worker_mongo_url: SecretStr | None = None
    """MongoDB URL the worker pods get as a plain value when ``mongo_secret`` is unset
    (default: the operator's own); for an operator that reaches MongoDB by another address."""
    worker_drain_timeout_sec: float = Field(default=30.0, ge=0)
    """The workers' drain on SIGTERM; the pods' termination grace period is this plus a margin."""
    mongo_secret: str | None = None
    """Secret (in the pool's namespace) whose key ``mongo_secret_key`` holds the MongoDB URL for workers."""
    mongo_secret_key: str = "url"
    health_port: int = Field(default=8080, ge=0, le=65535)
    health_host: str = "0.0.0.0"
    """Where the probes listen: every address of the pod; a loopback address on a host."""
    status_interval_sec: float = Field(default=1.0, gt=0)
    """At most one status patch per FlowTask per this many seconds (changes in between coalesce)."""
    sweep_interval_sec: float = Field(default=300.0, gt=0)
    """How often store tasks whose FlowTask is gone are cancelled and deleted."""

    @property
    def kafka_bootstrap_for_workers(self) -> str:
        return self.worker_kafka_bootstrap or self.coordinator.kafka_bootstrap

    @property
    def mongo_url_for_workers(self) -> str:
        url = self.worker_mongo_url or self.coordinator.mongo_url
        return url.get_secret_value()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, coordinator: Mapping[str, Any] | None = None
    ) -> OperatorConfig:
        """Read ``FLOWKIT_*`` variables; ``coordinator`` overrides the coordinator's settings."""
        env = os.environ if environ is None else environ
        coordinator_cfg = CoordinatorConfig.load(overrides=dict(coordinator or {}))
        raw: dict[str, Any] = {"coordinator": coordinator_cfg}
        for name in cls.model_fields:
            if name == "coordinator":
                continue
            value = env.get(PREFIX + name.upper())
            if value is None or value == "":
                continue
            raw[name] = (
                tuple(p.strip() for p in value.split(",") if p.strip()) if name == "namespaces" else value
            )
        policy = raw.get("worker_image_pull_policy")
        if policy is not None and policy not in PULL_POLICIES:
            raise ConfigError(
                f"{PREFIX}WORKER_IMAGE_PULL_POLICY={policy!r}: must be one of {', '.join(PULL_POLICIES)}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"operator settings: {problems}") from None
