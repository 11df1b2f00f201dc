"""Clients from settings: a KafkaBus and a MongoDB database, credentials never printed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..config import ConnectionSettings
from ..errors import ConfigError

DEFAULT_DATABASE = "flowkit"


def kafka_bus(settings: ConnectionSettings, client_id: str) -> Any:
    """A KafkaBus (not started) for ``settings``: bootstrap, topic prefix, SASL/TLS."""
    try:
        from ..bus.kafka import KafkaBus
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            f"the distributed runtime needs `pip install flowkit[distributed]` ({exc})"
        ) from None
    security: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        security["sasl_mechanism"] = settings.kafka_sasl_mechanism
        security["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            security["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile or settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        security["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return KafkaBus(
        settings.kafka_bootstrap, client_id=client_id, namespace=settings.topic_prefix, **security
    )


def database_name(url: str) -> str:
    """The database named in a MongoDB URL's path, or ``flowkit``."""
    path = urlsplit(url).path.strip("/")
    return path or DEFAULT_DATABASE


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def mongo_database(settings: ConnectionSettings, *, timeout_ms: int = 10_000) -> Any:
    """A pymongo ``AsyncMongoClient`` database for ``settings.mongo_url`` (not yet connected)."""
    try:
        from pymongo import AsyncMongoClient
    except ImportError as exc:  # pragma: no cover
        raise ConfigError(
            f"the distributed runtime needs `pip install flowkit[distributed]` ({exc})"
        ) from None
    url = settings.mongo_url.get_secret_value()
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"mongo URL {safe_url(url)!r} must start with mongodb:// or mongodb+srv://")
    client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    return client[database_name(url)]
