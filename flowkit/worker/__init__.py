"""Workers run user handlers for their roles.

Seed docs: ``from flowkit.worker import Worker, WorkerConfig``.
"""

from ..config import WorkerConfig
from .context import ArtifactsWriter, RunContext
from .handlers.base import Batch, BatchResult, FinalizationResult, FinalizeResult, Handler, RoleHandler
from .runtime import Worker

__all__ = [
    "ArtifactsWriter",
    "Batch",
    "BatchResult",
    "FinalizationResult",
    "FinalizeResult",
    "Handler",
    "RoleHandler",
    "RunContext",
    "Worker",
    "WorkerConfig",
]
