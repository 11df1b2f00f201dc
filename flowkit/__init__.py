"""FlowKit: DAG workflows over streaming workers.

Embedded (no servers)::

    async with flowkit.LocalRuntime(handlers={"processor": MyHandler()}) as rt:
        status = await rt.run(graph)
"""

from .config import CoordinatorConfig, WorkerConfig
from .coordinator import Coordinator, FunctionContext, coordinator_function
from .embedded import LocalRuntime
from .errors import (
    ConfigError,
    FlowKitError,
    GraphError,
    GraphProblem,
    HandlerError,
    NodeNotFound,
    TaskNotFound,
)
from .graph import GraphSpec, NodeSpec, load_graph_file, validate_graph
from .states import NodeStatus, State, TaskStatus
from .worker import (
    Batch,
    BatchResult,
    FinalizationResult,
    FinalizeResult,
    Handler,
    RoleHandler,
    RunContext,
    Worker,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchResult",
    "ConfigError",
    "Coordinator",
    "CoordinatorConfig",
    "FinalizationResult",
    "FinalizeResult",
    "FlowKitError",
    "FunctionContext",
    "GraphError",
    "GraphProblem",
    "GraphSpec",
    "Handler",
    "HandlerError",
    "LocalRuntime",
    "NodeNotFound",
    "NodeSpec",
    "NodeStatus",
    "RoleHandler",
    "RunContext",
    "State",
    "TaskNotFound",
    "TaskStatus",
    "Worker",
    "WorkerConfig",
    "__version__",
    "coordinator_function",
    "load_graph_file",
    "validate_graph",
]
