"""``pull.from_artifacts`` and ``pull.from_artifacts.rechunk:size``.

Their argument models are part of the graph language and live in
:mod:`flowkit.graph_registry`; they are re-exported here for the implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ...graph_registry import FromArtifactsArgs, RechunkArgs
from ...store.base import Artifact
from ..handlers.base import Batch
from .feed import ArtifactFeed

__all__ = ["FromArtifactsArgs", "RechunkArgs", "from_artifacts", "rechunk"]


def _ref(node_id: str, artifact: Artifact) -> dict[str, str]:
    return {"task_id": artifact.task_id, "node_id": node_id, "batch_uid": artifact.batch_uid}


async def from_artifacts(feed: ArtifactFeed, args: FromArtifactsArgs) -> AsyncIterator[Batch]:
    """One batch per upstream artifact."""
    async for node_id, artifact in feed.follow(
        args.from_nodes, poll_ms=args.poll_ms, until_done=args.eof_on_task_done
    ):
        yield Batch(
            batch_uid=f"{node_id}:{artifact.batch_uid}",
            payload={"from_node": node_id, "ref": _ref(node_id, artifact), "meta": artifact.meta},
        )


async def rechunk(feed: ArtifactFeed, args: RechunkArgs) -> AsyncIterator[Batch]:
    """Per upstream artifact: chunk ``meta[meta_list_key]`` (if a list) into ``size`` items.

    Without a usable ``meta_list_key`` the whole meta is one item. No guessing of
    domain keys; batch uids derive from the upstream ref and the chunk index only.
    """
    async for node_id, artifact in feed.follow(
        args.from_nodes, poll_ms=args.poll_ms, until_done=args.eof_on_task_done
    ):
        listed = artifact.meta.get(args.meta_list_key) if args.meta_list_key else None
        items = listed if isinstance(listed, list) else [artifact.meta]
        parent = {"from_node": node_id, "ref": _ref(node_id, artifact)}
        for index in range(0, len(items), args.size):
            yield Batch(
                batch_uid=f"{node_id}:{artifact.batch_uid}:{index // args.size}",
                payload={"items": items[index : index + args.size], "parent": parent},
            )
