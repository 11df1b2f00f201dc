"""Coordinator functions: graph steps that run inside the coordinator, no worker needed.

Built in: ``merge.generic`` and ``metrics.aggregate``. Register your own with
:func:`coordinator_function`::

    @coordinator_function("notify.slack")
    async def notify(ctx: FunctionContext, args: dict) -> dict | None:
        ...
        return {"sent": 1}          # metrics of the node (numbers), or None
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..metrics import sum_metrics
from ..states import TaskStatus
from ..store.base import Artifact, Store


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


FUNCTIONS: dict[str, _Registered] = {}


def coordinator_function(
    name: str, args_model: type[BaseModel] | None = None
) -> Callable[[FunctionImpl], FunctionImpl]:
    """Register ``impl`` under ``name``; ``args_model`` (pydantic) validates ``fn_args``."""

    def register(impl: FunctionImpl) -> FunctionImpl:
        FUNCTIONS[name] = _Registered(impl, args_model)
        return impl

    return register


def check_function_args(name: str, args: dict[str, Any]) -> str | None:
    registered = FUNCTIONS.get(name)
    if registered is None:
        raise KeyError(f"unknown coordinator function '{name}' (known: {', '.join(sorted(FUNCTIONS))})")
    if registered.args_model is None:
        return None
    try:
        registered.args_model.model_validate(args)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'fn_args'}: {e['msg']}" for e in exc.errors()
        )
    return None


async def call_function(name: str, ctx: FunctionContext, args: dict[str, Any]) -> dict[str, Any] | None:
    registered = FUNCTIONS[name]
    if registered.args_model is not None:
        args = registered.args_model.model_validate(args).model_dump()
    return await registered.impl(ctx, args)


# --- built-ins -------------------------------------------------------------------


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)


class FromNodesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_nodes: list[str] | None = None
    target: Target | None = None

    @model_validator(mode="before")
    @classmethod
    def _single_node_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "from_node" in data:
            data = {**data, "from_nodes": [data["from_node"]]}
            del data["from_node"]
        return data


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
