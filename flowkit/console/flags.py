"""Where a distributed command finds the installation: the connection flags, and running it.

``--mongo``, ``--kafka``, ``--topic-prefix`` > environment (``FLOWKIT_MONGO_URL``,
``FLOWKIT_KAFKA_BOOTSTRAP``, ``FLOWKIT_TOPIC_PREFIX``, and ``FLOWKIT_COORDINATOR_<FIELD>`` /
``FLOWKIT_WORKER_<FIELD>``) > ``--config FILE`` > defaults.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..config import CoordinatorConfig, WorkerConfig
from ..errors import ConfigError, TaskNotFound
from .connection import ClientSettings, Unreachable, connection_overrides
from .messages import EXIT_INTERRUPTED, fail

T = TypeVar("T")
Settings = TypeVar("Settings", ClientSettings, CoordinatorConfig, WorkerConfig)


@dataclass(frozen=True)
class ConnectionFlags:
    """``--kafka``, ``--mongo``, ``--topic-prefix`` and ``--config`` as given (None: not given)."""

    kafka: str | None = None
    mongo: str | None = None
    topic_prefix: str | None = None
    config_file: str | None = None

    def load(self, kind: type[Settings], **flags: Any) -> Settings:
        """``kind`` from the file, the environment, then these flags and ``flags`` (None: not given)."""
        overrides = connection_overrides(self.kafka, self.mongo, self.topic_prefix)
        overrides.update({name: value for name, value in flags.items() if value is not None})
        try:
            return kind.load(self.config_file, overrides=overrides)
        except ConfigError as exc:
            fail(str(exc))


_CONNECTION_OPTIONS = [
    click.option(
        "--kafka",
        metavar="BOOTSTRAP",
        default=None,
        help="Kafka bootstrap servers, host:port[,host:port] (env FLOWKIT_KAFKA_BOOTSTRAP; "
        "default localhost:9092).",
    ),
    click.option(
        "--mongo",
        metavar="URL",
        default=None,
        help="MongoDB URL with the database as its path, mongodb://[user:pass@]host[:port]/DB "
        "(env FLOWKIT_MONGO_URL; default mongodb://localhost:27017/flowkit).",
    ),
    click.option(
        "--topic-prefix",
        metavar="P",
        default=None,
        help="Prefix of every topic and consumer group (env FLOWKIT_TOPIC_PREFIX).",
    ),
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="FILE",
        help="JSON or YAML settings; flags > environment > this file > defaults.",
    ),
]


def connection_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the connection flags; ``command`` gets them as ``flags: ConnectionFlags``."""

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> None:
        names = ("kafka", "mongo", "topic_prefix", "config_file")
        flags = ConnectionFlags(*(kwargs.pop(name) for name in names))
        command(flags=flags, **kwargs)

    for option in reversed(_CONNECTION_OPTIONS):
        with_flags = option(with_flags)
    return with_flags


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, with the errors a user can fix as one line and their exit code."""
    try:
        return asyncio.run(coroutine)
    except (Unreachable, TaskNotFound, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
