"""Coordinator functions: graph steps that run inside the coordinator, no worker needed.

Built in: ``merge.generic`` and ``metrics.aggregate``. Register your own with
:func:`coordinator_function`::

    @coordinator_function("notify.slack")
    async def notify(ctx: FunctionContext, args: dict) -> dict | None:
        ...
        return {"sent": 1}          # metrics of the node (numbers), or None

Names and argument models are registered in
:data:`flowkit.graph_registry.COORDINATOR_FUNCTIONS`, which graph validation checks;
:data:`FUNCTIONS` holds the implementations and keeps that registry in step with them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..graph_registry import COORDINATOR_FUNCTIONS, FromNodesArgs, ImplementationTable, Target
from ..metrics import sum_metrics
from ..states import TaskStatus
from ..store.base import Artifact, Store

__all__ = [
    "FUNCTIONS",
    "FromNodesArgs",
    "FunctionContext",
    "Target",
    "call_function",
    "check_function_args",
    "coordinator_function",
]


@dataclass
class FunctionContext:
    task_id: str
    node_id: str
    params: dict[str, Any]
    depends_on: list[str]
    store: Store
    status: TaskStatus
    result: dict[str, Any] = field(default_factory=dict)
    """Entries to add to the task's ``result`` (what ``target.key`` writes into)."""

    async def artifacts(self, node_id: str) -> list[Artifact]:
        return await self.store.list_artifacts(self.task_id, node_id)

    async def write_artifact(self, batch_uid: str, meta: dict[str, Any]) -> None:
        await self.store.put_artifact(self.task_id, self.node_id, batch_uid, meta)


FunctionImpl = Callable[[FunctionContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class _Registered:
    impl: FunctionImpl
    args_model: type[BaseModel] | None


FUNCTIONS: ImplementationTable[_Registered] = ImplementationTable(COORDINATOR_FUNCTIONS)


def coordinator_function(
    name: str, args_model: type[BaseModel] | None = None
) -> Callable[[FunctionImpl], FunctionImpl]:
    """Register ``impl`` under ``name``; ``args_model`` (pydantic) validates ``fn_args``.

    The name and model go into :data:`flowkit.graph_registry.COORDINATOR_FUNCTIONS`, so
    graphs are checked against them before anything runs.
    """

    def register(impl: FunctionImpl) -> FunctionImpl:
        FUNCTIONS[name] = _Registered(impl, args_model)
        return impl

    return register


def check_function_args(name: str, args: dict[str, Any]) -> str | None:
    """None if ``args`` suit function ``name``; else what is wrong. KeyError if unknown."""
    return COORDINATOR_FUNCTIONS.check(name, args)


async def call_function(name: str, ctx: FunctionContext, args: dict[str, Any]) -> dict[str, Any] | None:
    registered = FUNCTIONS[name]
    if registered.args_model is not None:
        args = registered.args_model.model_validate(args).model_dump()
    return await registered.impl(ctx, args)


# --- built-ins -------------------------------------------------------------------


def _sources(ctx: FunctionContext, args: dict[str, Any]) -> list[str]:
    return list(args.get("from_nodes") or ctx.depends_on)


def _key(ctx: FunctionContext, args: dict[str, Any]) -> str:
    target = args.get("target") or {}
    return str(target.get("key") or ctx.node_id)


@coordinator_function("merge.generic", FromNodesArgs)
async def merge_generic(ctx: FunctionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the artifact metas of ``from_nodes`` (in node, then write order).

    The merged list becomes one artifact of this node (``meta["items"]``, so a
    downstream ``rechunk`` with ``meta_list_key: items`` can split it again) and
    ``result[target.key]`` of the task.
    """
    items: list[dict[str, Any]] = []
    for node_id in _sources(ctx, args):
        items.extend(a.meta for a in await ctx.artifacts(node_id))
    await ctx.write_artifact("merged", {"items": items, "count": len(items)})
    ctx.result[_key(ctx, args)] = items
    return {"merged_items": len(items)}


@coordinator_function("metrics.aggregate", FromNodesArgs)
async def metrics_aggregate(ctx: FunctionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Sum the numeric metrics of ``from_nodes`` into this node and ``result[target.key]``."""
    totals = sum_metrics(ctx.status.nodes[node_id].metrics for node_id in _sources(ctx, args))
    ctx.result[_key(ctx, args)] = dict(totals)
    return totals
