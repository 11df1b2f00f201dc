"""Reaching MongoDB and Kafka from the command, with one clear line when they are not there.

Every distributed command reads its connection settings the same way (flag >
environment > config file > default), checks MongoDB with a ``ping`` and starts the
Kafka clients before doing anything else, and turns a failure into
:class:`Unreachable`: what could not be reached, where (the URL with its password
masked) and why, in one line.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict

from ..backends import Backends
from ..backends.connect import database_name, mongo_database, safe_url
from ..config import ConnectionSettings
from ..errors import ConfigError, FlowKitError

KAFKA_CONNECT_TIMEOUT_SEC = 30.0
"""A bootstrap address that accepts connections but never answers as Kafka fails after this."""

_NOISE = (" (configured timeouts", ", Timeout:", ", Topology Description", " from [(", ", full error:")


class Unreachable(FlowKitError):
    """MongoDB or Kafka could not be reached; the message says which, where and why."""


class ClientSettings(ConnectionSettings):
    """The connection settings of ``flowkit submit``, ``status``, ``cancel``... Unlike a
    coordinator's or worker's, a config file may hold other keys: the same file serves."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)


def connection_overrides(kafka: str | None, mongo: str | None, topic_prefix: str | None) -> dict[str, Any]:
    """The settings given as flags (``--kafka``, ``--mongo``, ``--topic-prefix``); None is not given."""
    given = {"kafka_bootstrap": kafka, "mongo_url": mongo, "topic_prefix": topic_prefix}
    return {name: value for name, value in given.items() if value is not None}


def describe(settings: ConnectionSettings) -> str:
    """``MongoDB mongodb://u:***@db:27017/flowkit (database flowkit), Kafka k:9092, topic prefix 'p.'``"""
    url = settings.mongo_url.get_secret_value()
    prefix = f", topic prefix {settings.topic_prefix!r}" if settings.topic_prefix else ""
    return (
        f"MongoDB {safe_url(url)} (database {database_name(url)}), Kafka {settings.kafka_bootstrap}{prefix}"
    )


def open_database(settings: ConnectionSettings, *, timeout_ms: int = 10_000) -> Any:
    """The database of ``settings.mongo_url`` (not connected yet); ConfigError for a URL
    the driver cannot parse, naming it with its password masked."""
    try:
        return mongo_database(settings, timeout_ms=timeout_ms)
    except ConfigError:
        raise
    except Exception as exc:  # pymongo: InvalidURI, ConfigurationError, ValueError
        url = safe_url(settings.mongo_url.get_secret_value())
        raise ConfigError(f"MongoDB URL {url}: {_reason(exc, settings)}") from None


async def reach_mongo(db: Any, settings: ConnectionSettings) -> None:
    """``ping`` the database's server; Unreachable if it does not answer."""
    try:
        await db.command("ping")
    except Exception as exc:
        raise mongo_error(exc, settings, "cannot reach") from None


def mongo_error(exc: BaseException, settings: ConnectionSettings, what: str = "lost") -> Unreachable:
    """``cannot reach MongoDB at mongodb://h:27017/db: h:27017: [Errno 111] Connection refused``"""
    url = settings.mongo_url.get_secret_value()
    return Unreachable(f"{what} MongoDB at {safe_url(url)}: {_reason(exc, settings)}")


async def reach_kafka(backends: Backends, settings: ConnectionSettings) -> None:
    """Start the backends' Kafka clients (``acquire``: the caller releases them); Unreachable if they fail."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    try:
        async with asyncio.timeout(KAFKA_CONNECT_TIMEOUT_SEC):
            await backends.acquire()
    except TimeoutError:
        raise Unreachable(
            f"cannot reach {where}: no answer within {KAFKA_CONNECT_TIMEOUT_SEC:.0f}s"
        ) from None
    except Exception as exc:
        raise Unreachable(f"cannot reach {where}: {_reason(exc, settings)}") from None


def _reason(exc: BaseException, settings: ConnectionSettings) -> str:
    """The first, useful part of a driver's message, never with a password in it."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    for noise in _NOISE:
        text = text.split(noise, 1)[0]
    for secret, shown in _secrets(settings):
        text = text.replace(secret, shown)
    name = type(exc).__name__
    if not text or text.startswith(name):
        return text or name
    return f"{name}: {text}"


def _secrets(settings: ConnectionSettings) -> list[tuple[str, str]]:
    """(secret, what to show instead): the whole Mongo URL first, then each password alone."""
    pairs = []
    url = settings.mongo_url.get_secret_value()
    password = urlsplit(url).password
    if password:
        pairs += [(url, safe_url(url)), (password, "***")]
    if settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value():
        pairs.append((settings.kafka_sasl_password.get_secret_value(), "***"))
    return pairs
