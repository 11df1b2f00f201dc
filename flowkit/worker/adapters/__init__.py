"""Input adapters: how a node reads its upstream's artifacts instead of ``iter_batches``.

Orchestrator-first: when a node names ``io.input_inline.input_adapter``, the worker
uses it and the handler's ``iter_batches`` is not called. Argument rules live in the
pydantic models below; graph validation calls :func:`check_adapter_args` so a bad
adapter or bad arguments are rejected before anything runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..handlers.base import Batch
from .feed import ArtifactFeed
from .pull import FromArtifactsArgs, RechunkArgs, from_artifacts, rechunk


@dataclass(frozen=True)
class Adapter:
    args_model: type[BaseModel]
    batches: Callable[[ArtifactFeed, Any], AsyncIterator[Batch]]


ADAPTERS: dict[str, Adapter] = {
    "pull.from_artifacts": Adapter(FromArtifactsArgs, from_artifacts),
    "pull.from_artifacts.rechunk:size": Adapter(RechunkArgs, rechunk),
}


def check_adapter_args(name: str, args: dict[str, Any]) -> str | None:
    """None if ``args`` suit adapter ``name``; else what is wrong. KeyError if unknown."""
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise KeyError(f"unknown input adapter '{name}' (known: {', '.join(sorted(ADAPTERS))})")
    try:
        adapter.args_model.model_validate(args)
    except ValidationError as exc:
        return "; ".join(_describe(err) for err in exc.errors())
    return None


def _describe(err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "input_args"
    if err["type"] == "missing":
        return f"{field} is required"
    if err["type"] == "extra_forbidden":
        return f"{field} is not an argument of this adapter"
    return f"{field}: {err['msg']} (got {err.get('input')!r})"


def adapter_batches(name: str, args: dict[str, Any], feed: ArtifactFeed) -> AsyncIterator[Batch]:
    adapter = ADAPTERS[name]
    return adapter.batches(feed, adapter.args_model.model_validate(args))


__all__ = ["ADAPTERS", "ArtifactFeed", "adapter_batches", "check_adapter_args"]
