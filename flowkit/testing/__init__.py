"""Run a graph with your handlers in-process and assert on what happened.

>>> from flowkit.testing import run_graph
>>> result = await run_graph(graph, {"extractor": Extract(), "loader": Load()})
>>> assert result.finished
>>> assert result.state("load") == "finished"
>>> assert result.metrics("load")["rows"] == 40
>>> assert [a["items"] for a in result.artifacts("extract")]

The run uses :class:`flowkit.LocalRuntime` (in-process bus, in-memory store), the
same engine ``flowkit run`` uses. The pytest plugin (``flowkit.testing.plugin``,
loaded automatically once FlowKit is installed) offers it as the fixture
``run_flowkit_graph``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..embedded import DEFAULT_CONCURRENCY, LocalRuntime
from ..graph import GraphSpec, load_graph_file
from ..states import NodeStatus, State, TaskStatus
from ..store.base import Artifact
from ..worker.handlers.base import Handler

GraphInput = Mapping[str, Any] | GraphSpec | str | Path


@dataclass(frozen=True)
class TaskResult:
    """The final status of a task and every artifact its nodes wrote."""

    status: TaskStatus
    stored_artifacts: dict[str, list[Artifact]] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.status.task_id

    @property
    def finished(self) -> bool:
        """True when the task ended ``finished`` (every node finished)."""
        return self.status.status == State.FINISHED

    @property
    def result(self) -> dict[str, Any]:
        """The task's ``result`` (what ``merge.generic`` / ``metrics.aggregate`` write to ``target.key``)."""
        return self.status.result

    def node(self, node_id: str) -> NodeStatus:
        """The status record of one node; KeyError names the known nodes."""
        try:
            return self.status.nodes[node_id]
        except KeyError:
            raise KeyError(f"no node '{node_id}' (nodes: {sorted(self.status.nodes)})") from None

    def state(self, node_id: str) -> State:
        """The node's final state; compares equal to its string (``"finished"``)."""
        return self.node(node_id).status

    def metrics(self, node_id: str) -> dict[str, float]:
        """The node's metrics: batch metrics summed over unique batch uids, finalize merged in."""
        return self.node(node_id).metrics

    def artifacts(self, node_id: str) -> list[dict[str, Any]]:
        """The metas of the node's artifacts, in the order they were first written."""
        self.node(node_id)
        return [a.meta for a in self.stored_artifacts.get(node_id, [])]

    def states(self) -> dict[str, str]:
        """``{node_id: state}`` for every node: handy in assertion messages."""
        return {nid: n.status.value for nid, n in self.status.nodes.items()}


async def run_graph(
    graph: GraphInput,
    handlers: Mapping[str, Handler],
    params: dict[str, Any] | None = None,
    timeout: float = 30,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> TaskResult:
    """Run ``graph`` (a mapping, a GraphSpec or a YAML/JSON file path) to its end.

    Raises :class:`flowkit.GraphError` for an invalid graph, and TimeoutError (after
    cancelling the task) when it has not ended within ``timeout`` seconds; a task that
    fails is returned, not raised, so tests can assert on how it failed.
    """
    if isinstance(graph, str | Path):
        graph = load_graph_file(graph)
    async with LocalRuntime(handlers, concurrency=concurrency) as runtime:
        task_id = await runtime.submit(graph, params)
        try:
            status = await runtime.coordinator.wait_task(task_id, timeout=timeout)
        except TimeoutError:
            states = (await runtime.coordinator.get_status(task_id)).nodes
            await runtime.coordinator.cancel_task(task_id, reason="flowkit.testing timeout")
            summary = ", ".join(f"{nid}={n.status.value}" for nid, n in states.items())
            raise TimeoutError(f"task {task_id} did not end within {timeout}s ({summary})") from None
        stored = {node_id: await runtime.store.list_artifacts(task_id, node_id) for node_id in status.nodes}
    return TaskResult(status=status, stored_artifacts=stored)


def run_graph_sync(
    graph: GraphInput,
    handlers: Mapping[str, Handler],
    params: dict[str, Any] | None = None,
    timeout: float = 30,
) -> TaskResult:
    """:func:`run_graph` for synchronous tests (starts its own event loop)."""
    return asyncio.run(run_graph(graph, handlers, params, timeout))


__all__ = ["TaskResult", "run_graph", "run_graph_sync"]
