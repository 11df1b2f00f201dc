"""The tables of ``flowkit tasks`` and ``flowkit workers``, and how ages read (``3s ago``)."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from ..states import TaskStatus
from .progress import state_text

STALE_HEARTBEATS = 3
"""A worker whose last heartbeat is older than this many intervals is shown as stale."""


def format_ago(then: float | None, now: float) -> str:
    """``3s ago``, ``4m ago``, ``2h ago``, ``5d ago``; ``-`` for never."""
    if not then:
        return "-"
    seconds = max(0.0, now - then)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def format_time(then: float | None) -> str:
    """Local time, ``2026-11-23 14:05:09``; ``-`` for never."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then)) if then else "-"


def tasks_table(tasks: list[TaskStatus]) -> Table:
    """One row per task: id, state, done/total nodes, created, owner."""
    table = Table(header_style="bold")
    for column in ("task", "state", "nodes done", "created", "owner"):
        table.add_column(column, justify="right" if column == "nodes done" else "left")
    for task in tasks:
        done = sum(1 for n in task.nodes.values() if n.status.terminal)
        owner = Text(task.owner) if task.owner else Text("(waiting for a coordinator)", style="dim")
        if task.status.terminal:
            owner = Text(task.owner or "-", style="dim")
        table.add_row(
            task.task_id,
            state_text(task.status),
            f"{done}/{len(task.nodes)}",
            format_time(task.created_at),
            owner,
        )
    return table


def worker_liveness(state: dict[str, Any], now: float, hb_interval_sec: float) -> str:
    """``online``, ``draining``, ``offline``, or ``stale`` when heartbeats stopped without a goodbye."""
    status = str(state.get("status") or "unknown")
    if status == "offline":
        return status
    last = state.get("last_heartbeat")
    if not last or now - float(last) > STALE_HEARTBEATS * hb_interval_sec:
        return "stale"
    return status


_LIVENESS_STYLES = {"online": "green", "draining": "yellow", "offline": "dim", "stale": "bold red"}


def workers_table(states: list[dict[str, Any]], now: float, hb_interval_sec: float) -> Table:
    """One row per worker: id, roles, capacity, busy, status, last heartbeat, host/pid."""
    table = Table(header_style="bold")
    for column in ("worker", "roles", "capacity", "busy", "status", "last heartbeat", "host/pid"):
        table.add_column(column, justify="right" if column in ("capacity", "busy") else "left")
    for state in states:
        liveness = worker_liveness(state, now, hb_interval_sec)
        host = state.get("host") or "-"
        pid = state.get("pid")
        table.add_row(
            str(state.get("worker_id", "?")),
            ", ".join(state.get("roles") or []) or "-",
            str(state.get("capacity", "-")),
            str(state.get("busy", 0)),
            Text(liveness, style=_LIVENESS_STYLES.get(liveness, "")),
            format_ago(state.get("last_heartbeat"), now),
            f"{host}/{pid}" if pid is not None else str(host),
            style="dim" if liveness in ("offline", "stale") else "",
        )
    return table
