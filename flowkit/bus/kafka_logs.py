"""aiokafka's log, where it cries wolf: a retried leader change is not an error.

Right after a topic is created (every fresh installation, every test), the broker's
metadata names a partition's leader a moment before that broker serves it, and a
consumer that asks for its offsets then is told "not leader". aiokafka retries after
its backoff and goes on, but logs each try at ERROR ("Failed fetch offsets from 1:
NotLeaderForPartitionError"), so a first ``flowkit worker`` greets its user with errors.
Those records, and only those, become DEBUG records here. A leader that never comes
shows anyway: the consumer does not move, and sends and commits fail loudly.
"""

from __future__ import annotations

import logging

from aiokafka.errors import LeaderNotAvailableError, NotLeaderForPartitionError, UnknownTopicOrPartitionError

FETCHER_LOGGER = "aiokafka.consumer.fetcher"
_RETRIED = (NotLeaderForPartitionError, LeaderNotAvailableError, UnknownTopicOrPartitionError)


class RetriedLeaderChange(logging.Filter):
    """Turns aiokafka's "Failed fetch offsets" for a leader not yet (or no longer) there
    into a DEBUG record, emitted only where DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not (
            str(record.msg).startswith("Failed fetch offsets") and any(isinstance(a, _RETRIED) for a in args)
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_retried_leader_changes() -> None:
    """Install the filter on aiokafka's fetcher logger (once, however often called)."""
    fetcher = logging.getLogger(FETCHER_LOGGER)
    if not any(isinstance(f, RetriedLeaderChange) for f in fetcher.filters):
        fetcher.addFilter(RetriedLeaderChange())
