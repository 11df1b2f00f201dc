"""Coordinator and worker configuration: defaults < file < environment < overrides.

``WorkerConfig.load("worker.json", overrides={"roles": ["processor"]})`` as in the seed
docs; environment variables ``FLOWKIT_WORKER_<FIELD>`` / ``FLOWKIT_COORDINATOR_<FIELD>``
(lists comma-separated, or JSON) sit between the file and the overrides. The connection
settings shared by every process also read ``FLOWKIT_KAFKA_BOOTSTRAP``,
``FLOWKIT_MONGO_URL`` and ``FLOWKIT_TOPIC_PREFIX`` (the command line's flags are the
overrides, so: flag > environment > file > default).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from .errors import ConfigError


class _LoadableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    env_prefix: ClassVar[str] = "FLOWKIT_"

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Self:
        """Read a JSON or YAML file, apply environment variables, then ``overrides``."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(_read_mapping(Path(path)))
        data.update(cls._from_environment())
        data.update(overrides or {})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            where = f" in {path}" if path else ""
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{cls.__name__}{where}: {problems}") from None

    @classmethod
    def _from_environment(cls) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"{cls.env_prefix}{name.upper()}")
            if raw is None and name in SHARED_ENVIRONMENT:
                raw = os.environ.get(SHARED_ENVIRONMENT[name])
            if raw is None:
                continue
            try:
                found[name] = json.loads(raw)
            except ValueError:
                found[name] = raw.split(",") if name in ("roles", "worker_types") else raw
        return found


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


SHARED_ENVIRONMENT = {
    "kafka_bootstrap": "FLOWKIT_KAFKA_BOOTSTRAP",
    "mongo_url": "FLOWKIT_MONGO_URL",
    "topic_prefix": "FLOWKIT_TOPIC_PREFIX",
    "kafka_security_protocol": "FLOWKIT_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "FLOWKIT_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "FLOWKIT_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "FLOWKIT_KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "FLOWKIT_KAFKA_SSL_CAFILE",
}
"""Settings every FlowKit process shares, under one environment name each."""


class ConnectionSettings(_LoadableConfig):
    """Where Kafka and MongoDB are, and how to log in. Secrets are ``SecretStr``: their
    value never appears in a repr, a log line or an error message."""

    kafka_bootstrap: str = "localhost:9092"
    mongo_url: SecretStr = SecretStr("mongodb://localhost:27017/flowkit")
    """``mongodb://[user:password@]host[:port]/DATABASE[?options]``; the database defaults to ``flowkit``."""
    topic_prefix: str = ""
    """Prefixes every topic and consumer group: installations sharing one Kafka stay apart."""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None


class CoordinatorConfig(ConnectionSettings):
    """Settings of a coordinator (seed docs: ``CoordinatorConfig(worker_types=[...])``)."""

    env_prefix: ClassVar[str] = "FLOWKIT_COORDINATOR_"

    worker_types: list[str] | None = None
    """Roles that have workers; graphs using other roles are rejected. None: don't check."""
    coordinator_id: str = Field(default_factory=lambda: f"coord-{uuid.uuid4().hex[:8]}")
    max_nodes: int = Field(default=10_000, ge=1)
    worker_lease_ttl_sec: float = Field(default=60.0, gt=0)
    """A running node whose worker sent no heartbeat for this long is retried elsewhere."""
    lease_check_interval_sec: float = Field(default=5.0, gt=0)
    task_lease_sec: float = Field(default=15.0, gt=0)
    """How long this coordinator holds its tasks without renewing; another adopts them after."""
    adopt_interval_sec: float = Field(default=2.0, gt=0)
    """How often to look for tasks nobody holds (new from `flowkit submit`, or orphaned)."""
    accept_timeout_sec: float = Field(default=30.0, gt=0)
    """A command no worker accepted within this is sent again (to another partition)."""
    max_worker_losses: int = Field(default=5, ge=0)
    """Attempts a node may lose with their worker before it fails (``worker_lost``); separate
    from ``retry_policy.max``, which is for the handler's own errors."""
    role_concurrency: dict[str, int] = Field(default_factory=dict)
    """At most this many running or dispatched nodes per role (missing: no limit)."""


class WorkerConfig(ConnectionSettings):
    """Settings of a worker, with the seed docs' names and defaults."""

    env_prefix: ClassVar[str] = "FLOWKIT_WORKER_"

    roles: list[str] = Field(default_factory=list)
    worker_id: str | None = None
    worker_version: str = "2.0.0"
    lease_ttl_sec: float = Field(default=60, gt=0)
    hb_interval_sec: float = Field(default=20, gt=0)
    announce_interval_sec: float = Field(default=60, gt=0)
    dedup_cache_size: int = Field(default=10_000, ge=0)
    dedup_ttl_ms: int = Field(default=3_600_000, ge=0)
    pull_poll_ms_default: int = Field(default=300, gt=0)
    db_cancel_poll_ms: int = Field(default=500, gt=0)
    capacity: int = Field(default=1, ge=1)
    """How many node runs this worker executes at once."""
    slot_wait_sec: float = Field(default=5.0, gt=0)
    """How long a command may wait here for a free slot before it is declined and sent to
    another worker: a command waiting on a busy worker holds up its whole partition (and a
    streaming reader in the slot may be waiting for exactly that command)."""
    cancel_grace_sec: float = Field(default=10.0, ge=0)
    """After a cancel, how long a handler may take to notice ``ctx.cancel_flag`` before it is interrupted."""
    health_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve ``/healthz`` and ``/readyz`` on this port (``flowkit worker``; Kubernetes probes)."""
    health_host: str = "0.0.0.0"
    """The address the health port listens on: every address of a pod by default; set a
    loopback address when running on a host (``FLOWKIT_WORKER_HEALTH_HOST``)."""
    drain_timeout_sec: float = Field(default=30.0, ge=0)
    """On SIGTERM (``drain()``): how long running attempts may take to finish before being handed back."""

    @model_validator(mode="after")
    def _fill_worker_id(self) -> Self:
        if not self.worker_id:
            object.__setattr__(self, "worker_id", f"worker-{uuid.uuid4().hex[:10]}")
        return self
