"""What users implement: a :class:`Handler` per worker role, and the values it passes.

A run of one node goes ``init(run_info)`` → batches (from the node's input adapter,
or ``iter_batches(input_data)``) → ``process_batch`` for each → ``finalize`` →
``cleanup``. One handler instance serves every run of its role on a worker; keep
per-run state on ``ctx`` (or in ``init`` when the worker's capacity is 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import HandlerError
from ..context import RunContext


@dataclass(slots=True)
class Batch:
    """One unit of work. ``batch_uid`` must be stable across re-runs: it is how a
    repeated batch is recognised and counted once."""

    batch_uid: str
    payload: Any = None


@dataclass(slots=True)
class BatchResult:
    success: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts_ref: Any = None
    reason_code: str | None = None
    """On ``success=False``: the error code (matched against ``retry_policy.permanent_on``)."""
    permanent: bool = False
    error: str | None = None


@dataclass(slots=True)
class FinalizeResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts_ref: Any = None


FinalizationResult = FinalizeResult


class Handler:
    """Base class for role handlers. Override ``process_batch``; the rest is optional."""

    async def init(self, run_info: dict[str, Any]) -> None:
        """Called once per run with ``task_id``, ``node_id``, ``attempt``, ``params``..."""

    async def iter_batches(self, input_data: dict[str, Any]) -> AsyncIterator[Batch]:
        """Yield the node's batches. ``input_data`` is the node's ``io`` section.

        The default yields one batch whose payload is ``io.input_inline``.
        """
        yield Batch(batch_uid="inline", payload=input_data.get("input_inline", {}))

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        raise NotImplementedError(f"{type(self).__name__} must implement process_batch(batch, ctx)")

    async def finalize(self, ctx: RunContext) -> FinalizeResult | None:
        """Called after the last batch; its metrics are merged into the node's."""
        return None

    async def cleanup(self) -> None:
        """Always called at the end of a run, whatever happened."""

    def classify_error(self, error: Exception) -> tuple[str, bool]:
        """Return ``(code, permanent)``. Permanent errors are never retried."""
        if isinstance(error, HandlerError):
            return error.code, error.permanent
        return type(error).__name__, False


RoleHandler = Handler

__all__ = [
    "Batch",
    "BatchResult",
    "FinalizationResult",
    "FinalizeResult",
    "Handler",
    "RoleHandler",
    "RunContext",
]
