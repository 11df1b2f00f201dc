"""One exception hierarchy for FlowKit.

Every error names the object it is about and, where it helps, the field and the fix:
``node 'transform': io.input_args.size must be a positive integer (got -3)``.
"""

from __future__ import annotations

from dataclasses import dataclass


class FlowKitError(Exception):
    """Base of every error FlowKit raises on purpose."""


@dataclass(frozen=True)
class GraphProblem:
    """One thing wrong with a graph: which node, which field, a stable code, and why."""

    node_id: str | None
    field: str
    code: str
    message: str

    def __str__(self) -> str:
        where = f"node '{self.node_id}'" if self.node_id is not None else "graph"
        return f"{where}: {self.field}: {self.message} [{self.code}]"


class GraphError(FlowKitError):
    """A graph was rejected before anything ran. ``problems`` lists every reason."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid graph ({len(problems)} {noun}):\n{lines}")

    @property
    def first(self) -> GraphProblem:
        return self.problems[0]

    @property
    def node_id(self) -> str | None:
        return self.first.node_id

    @property
    def field(self) -> str:
        return self.first.field

    @property
    def code(self) -> str:
        return self.first.code


class TaskNotFound(FlowKitError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task '{task_id}' not found")


class ConfigError(FlowKitError):
    """A configuration file or value is wrong; the message names the key."""


class HandlerError(FlowKitError):
    """Raised by handlers (or FlowKit on their behalf) with an explicit error code.

    ``permanent=True`` means retrying cannot help (bad input, schema mismatch).
    """

    def __init__(self, code: str, message: str = "", *, permanent: bool = False) -> None:
        self.code = code
        self.permanent = permanent
        super().__init__(message or code)


class InputAdapterError(HandlerError):
    """The node's input adapter could not be used; always permanent."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, permanent=True)


class UpstreamFailed(HandlerError):
    """An upstream node this node reads from failed or was cancelled."""

    def __init__(self, message: str) -> None:
        super().__init__("upstream_failed", message, permanent=True)


class NodeNotFound(FlowKitError):
    def __init__(self, task_id: str, node_id: str) -> None:
        self.task_id = task_id
        self.node_id = node_id
        super().__init__(f"task '{task_id}' has no node '{node_id}'")


class LeaseLost(FlowKitError):
    """A coordinator wrote to a task another coordinator has claimed since (its fence is stale)."""

    def __init__(self, task_id: str, owner: str, token: int) -> None:
        self.task_id = task_id
        super().__init__(f"task '{task_id}': coordinator {owner} no longer holds it (fence {token} is stale)")
