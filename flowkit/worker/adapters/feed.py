"""Following upstream artifact streams until their nodes are done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ...states import TERMINAL
from ...store.base import Artifact, Store

READ_AHEAD = 500
"""Artifacts asked for per read of a stream being written."""


@dataclass
class ArtifactFeed:
    """Reads the artifacts of upstream nodes of one task, in each node's write order."""

    store: Store
    task_id: str
    default_poll_ms: int
    cancel_flag: asyncio.Event

    async def follow(
        self, from_nodes: list[str], *, poll_ms: int | None, until_done: bool
    ) -> AsyncIterator[tuple[str, Artifact]]:
        """Yield ``(node_id, artifact)`` as they appear.

        With ``until_done`` (``eof_on_task_done``), keep following a node until it
        reaches a terminal state; otherwise read what is there now and stop. A store
        change wakes the reader at once; ``poll_ms`` bounds the wait for stores that
        cannot notify.
        """
        timeout = (poll_ms or self.default_poll_ms) / 1000
        cursors = dict.fromkeys(from_nodes, 0)
        following = list(dict.fromkeys(from_nodes))
        while following and not self.cancel_flag.is_set():
            version = self.store.version(self.task_id)
            got_any = False
            for node_id in list(following):
                # State first, then artifacts: a node seen done has written everything,
                # read at once (as is all there is now, when not following to the end);
                # while it writes, the next ones by key, a chunk at a time.
                done = (await self.store.node_state(self.task_id, node_id)) in TERMINAL
                if done or not until_done:
                    artifacts = await self.store.list_artifacts(self.task_id, node_id, after=cursors[node_id])
                else:
                    artifacts = await self.store.next_artifacts(
                        self.task_id, node_id, cursors[node_id], READ_AHEAD
                    )
                if artifacts:
                    cursors[node_id] = artifacts[-1].seq
                got_any = got_any or bool(artifacts)
                for artifact in artifacts:
                    yield node_id, artifact
                if done or not until_done:
                    following.remove(node_id)
            if following and not got_any:
                await self.store.wait_changed(self.task_id, version, timeout)
