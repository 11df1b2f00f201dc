"""aiokafka's "Failed fetch offsets" for a leader not there yet is a DEBUG record, not an error."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError

from flowkit.bus.kafka_logs import FETCHER_LOGGER, RetriedLeaderChange, quiet_retried_leader_changes

pytestmark = pytest.mark.unit


def fetch_failed(error: Exception) -> None:
    """As aiokafka's fetcher logs a failed offsets request."""
    logging.getLogger(FETCHER_LOGGER).error("Failed fetch offsets from %s: %s", 1, error)


def test_a_retried_leader_change_is_debug_and_other_fetch_failures_stay_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_retried_leader_changes()
    quiet_retried_leader_changes()  # installed once however often called
    fetcher = logging.getLogger(FETCHER_LOGGER)
    assert sum(isinstance(f, RetriedLeaderChange) for f in fetcher.filters) == 1

    with caplog.at_level(logging.INFO, logger=FETCHER_LOGGER):
        fetch_failed(NotLeaderForPartitionError())
        fetch_failed(KafkaConnectionError())
    assert [(r.levelname, type(r.args[1]).__name__) for r in caplog.records] == [  # type: ignore[index]
        ("ERROR", "KafkaConnectionError")
    ]

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=FETCHER_LOGGER):
        fetch_failed(NotLeaderForPartitionError())
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
