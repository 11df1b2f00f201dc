"""The Celery app of the peer benchmark: one no-op task, Redis as broker and result backend.

The broker's address comes from ``BENCH_REDIS_URL`` (set by ``peer.py``, which starts
Redis and the worker).
"""

from __future__ import annotations

import os

from celery import Celery

url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("flowkit_bench", broker=url, backend=url)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(*_: object) -> None:
    """Does nothing: the figures are Celery's own overhead."""
