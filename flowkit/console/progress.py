"""How a running task looks on the terminal: a live table per node, and the final summary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..states import NodeStatus, State, TaskStatus

STATE_STYLES: dict[State, str] = {
    State.QUEUED: "dim",
    State.RUNNING: "bold blue",
    State.DEFERRED: "yellow",
    State.FINISHED: "green",
    State.FAILED: "bold red",
    State.CANCELLING: "magenta",
    State.CANCELLED: "magenta",
}


def state_text(state: State) -> Text:
    """The state's name in its colour."""
    return Text(state.value, style=STATE_STYLES.get(state, ""))


def format_duration(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``2m05s``; ``-`` when the node never started."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def format_metrics(node: NodeStatus, limit: int = 3) -> str:
    """``rows=40 cents=1234`` (at most ``limit`` metrics, then ``…``)."""
    items = [f"{k}={_number(v)}" for k, v in node.metrics.items()]
    return " ".join(items[:limit]) + (" …" if len(items) > limit else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _headline(status: TaskStatus) -> Text:
    done = sum(1 for n in status.nodes.values() if n.status.terminal)
    text = Text(f"task {status.task_id}  ")
    text.append_text(state_text(status.status))
    text.append(f"  {done}/{len(status.nodes)} nodes done")
    return text


class ProgressView:
    """Keeps the latest status; renders it as a table on every refresh (elapsed keeps ticking)."""

    def __init__(self) -> None:
        self.status: TaskStatus | None = None

    def update(self, status: TaskStatus) -> None:
        """Remember the newest status (called from the event loop)."""
        self.status = status

    def render(self) -> Group | Text:
        """The table for the latest status (called by rich's refresh thread)."""
        status = self.status
        if status is None:
            return Text("starting…", style="dim")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("node", "role", "state", "attempts", "batches", "elapsed"):
            table.add_column(column, justify="right" if column in ("attempts", "batches") else "left")
        for node in status.nodes.values():
            table.add_row(
                node.node_id,
                node.type,
                state_text(node.status),
                str(node.attempts),
                str(node.batches),
                format_duration(node.duration),
            )
        return Group(_headline(status), table)

    @contextlib.contextmanager
    def live(self, console: Console) -> Iterator[None]:
        """Show the table on ``console`` (stderr) while inside; it disappears at the end."""
        with Live(console=console, get_renderable=self.render, refresh_per_second=8, transient=True):
            yield


class ChangeLog:
    """For a terminal-less stderr (CI logs, pipes): one line per node state change."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[str, tuple[State, int]] = {}
        self.started = time.monotonic()

    def update(self, status: TaskStatus) -> None:
        """Print a line for each node whose state or attempt changed since the last call."""
        for node in status.nodes.values():
            key = (node.status, node.attempts)
            if self.seen.get(node.node_id) == key or node.attempts == 0:
                continue
            self.seen[node.node_id] = key
            at = time.monotonic() - self.started
            self.console.print(
                f"[{at:6.2f}s] {node.node_id}: {node.status.value} (attempt {node.attempts})",
                markup=False,
                highlight=False,
            )


def summary_table(status: TaskStatus) -> Group:
    """The final table: node, state, attempts, batches, duration, metrics, error code."""
    table = Table(header_style="bold")
    for column in ("node", "state", "attempts", "batches", "duration", "metrics", "error"):
        table.add_column(column, justify="right" if column in ("attempts", "batches", "duration") else "left")
    for node in status.nodes.values():
        error = node.error.code if node.error and node.status != State.FINISHED else ""
        table.add_row(
            node.node_id,
            state_text(node.status),
            str(node.attempts),
            str(node.batches),
            format_duration(node.duration if node.started_at else None),
            format_metrics(node),
            Text(error, style="red"),
        )
    took = (status.finished_at or time.time()) - status.created_at if status.created_at else None
    headline = _headline(status)
    headline.append(f"  in {format_duration(took)}")
    lines: list[Text | Table] = [headline, table]
    failed = [n for n in status.nodes.values() if n.status == State.FAILED and n.error]
    for node in failed:
        assert node.error is not None
        lines.append(Text(f"{node.node_id}: {node.error.code}: {node.error.message}", style="red"))
    return Group(*lines)
