"""Input adapters: how a node reads its upstream's artifacts instead of ``iter_batches``.

Orchestrator-first: when a node names ``io.input_inline.input_adapter``, the worker
uses it and the handler's ``iter_batches`` is not called. Names and argument models
live in :data:`flowkit.graph_registry.INPUT_ADAPTERS`, which graph validation checks so
a bad adapter or bad arguments are rejected before anything runs; :data:`ADAPTERS`
adds the implementations and keeps that registry in step with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ...graph_registry import INPUT_ADAPTERS, ImplementationTable
from ..handlers.base import Batch
from .feed import ArtifactFeed
from .pull import FromArtifactsArgs, RechunkArgs, from_artifacts, rechunk


@dataclass(frozen=True)
class Adapter:
    args_model: type[BaseModel]
    batches: Callable[[ArtifactFeed, Any], AsyncIterator[Batch]]


ADAPTERS: ImplementationTable[Adapter] = ImplementationTable(
    INPUT_ADAPTERS,
    {
        "pull.from_artifacts": Adapter(FromArtifactsArgs, from_artifacts),
        "pull.from_artifacts.rechunk:size": Adapter(RechunkArgs, rechunk),
    },
)


def check_adapter_args(name: str, args: dict[str, Any]) -> str | None:
    """None if ``args`` suit adapter ``name``; else what is wrong. KeyError if unknown."""
    return INPUT_ADAPTERS.check(name, args)


def adapter_batches(name: str, args: dict[str, Any], feed: ArtifactFeed) -> AsyncIterator[Batch]:
    adapter = ADAPTERS[name]
    return adapter.batches(feed, adapter.args_model.model_validate(args))


__all__ = ["ADAPTERS", "ArtifactFeed", "adapter_batches", "check_adapter_args"]
