"""The wire contract between coordinator and workers: message envelope, kinds, topics.

The same envelopes travel over the in-process bus (as objects) and over Kafka (as
JSON). Every message carries enough ids to be applied idempotently: a status for an
attempt that is no longer current, or a batch already counted, changes nothing.
"""

from __future__ import annotations

import itertools
import secrets
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1

# -- every topic and consumer-group name, in one place (a prefix isolates installations) --
STATUS_TOPIC = "status.v1"
"""Workers -> coordinators: what happened to an attempt. Every coordinator reads all of it."""
SIGNALS_TOPIC = "signals.v1"
"""Coordinators -> workers: cancel an attempt. Broadcast, never replayed."""
ANNOUNCE_TOPIC = "workers.announce.v1"
CHANGES_TOPIC = "changes.v1"
"""The change feed: "task T changed" after writes, so other processes re-read at once."""
DEAD_LETTER_TOPIC = "deadletter.v1"


def command_topic(role: str) -> str:
    """Commands for one worker role, shared by that role's pool (``cmd.<role>.v1``)."""
    return f"cmd.{role}.v1"


def worker_group(role: str) -> str:
    """The consumer group of a role's pool: its members share the role's commands."""
    return f"flowkit.workers.{role}"


class Kind(StrEnum):
    # coordinator -> workers
    RUN = "cmd.run"
    CANCEL = "cmd.cancel"
    # workers -> coordinator
    ACCEPTED = "status.accepted"
    ARTIFACT = "status.artifact"  # the attempt wrote its first partial artifact
    BATCH_DONE = "status.batch_done"
    FINISHED = "status.finished"
    FAILED = "status.failed"
    CANCELLED = "status.cancelled"
    RELEASED = "status.released"  # the worker gave the attempt back (shutdown): not the handler's fault
    DECLINED = "status.declined"  # no free slot in time: not claimed, send it elsewhere
    HEARTBEAT = "status.heartbeat"
    ANNOUNCE = "worker.announce"
    CHANGED = "feed.changed"


_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


def new_id() -> str:
    """Unique across processes (a random per-process prefix) and cheap (a counter)."""
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


class Envelope(BaseModel):
    """One message. ``dedup_key`` is stable across redeliveries of the same fact."""

    model_config = ConfigDict(frozen=True)

    v: int = PROTOCOL_VERSION
    kind: Kind
    msg_id: str = Field(default_factory=new_id)
    dedup_key: str = ""
    task_id: str = ""
    node_id: str = ""
    attempt: int = 0
    worker_id: str = ""
    ts: float = Field(default_factory=time.time)
    payload: dict[str, Any] = Field(default_factory=dict)
    hop: int = 0
    """How many times a command was sent again because no worker took it (declined, or not
    accepted in time): it moves the command to another partition, so another worker."""

    def key(self) -> str:
        """Partition key. Status of a task stays in order on one partition; commands are
        keyed by node too, so a wide fan-out spreads over the role's partitions and workers,
        and by hop, so a command a busy worker declined goes elsewhere next time."""
        if self.kind == Kind.RUN:
            return f"{self.task_id}/{self.node_id}" + (f"/{self.hop}" if self.hop else "")
        return self.task_id or self.worker_id


class RunCommand(BaseModel):
    """Payload of ``cmd.run``: everything a worker needs to run one node attempt."""

    model_config = ConfigDict(frozen=True)

    role: str
    io: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
