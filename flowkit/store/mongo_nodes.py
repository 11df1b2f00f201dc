"""Node records in MongoDB: one small document per node of a task (part of MongoStore).

``flowkit_nodes`` holds ``{_id: json [task id, generation, node id], task_id, gen,
fence, <NodeStatus fields>}``. The generation is the task document's ``order`` (its
creation id), so the nodes of a task deleted and created afresh under the same id, or
of a creation that died before its task document was inserted, are never mixed into
it: readers keep the documents of the live generation only.

Why not a sub-document of the task: FerretDB 1.24 (the tests' server) reads and writes
a whole document for every update, so with the nodes inside, every node change of a
1,000-node task rewrote all of it (tens of milliseconds a write, and the coordinator
writes at every state change), and every worker read all of it to learn one node's
state. Written one by one, a node write costs what a small document costs.

Node documents are fenced like the task document: each carries the ``fence`` of the
last owner that wrote it, a fenced write requires ``fence <= token`` and sets it to the
token, and a claim that takes the task from an earlier owner moves every node of the
task on to its new token before it returns, so a stale owner's write is refused from
then on (the window before is the task document's too, docs/backends.md "Fencing"). A
task's first claim moves nothing: no owner came before it (on FerretDB the move cost
a 1,000-node task 0.4 s between its claim and its first run command).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from pymongo import UpdateOne

from ..errors import TaskNotFound
from ..states import NodeStatus, State
from .mongo_keys import decode_keys, encode_keys
from .mongo_part import IDS_PER_READ, MongoStorePart, bulk_update, find_by_ids, in_chunks, insert_new

_NOT_NODE_STATUS = ("_id", "task_id", "gen", "fence")


def node_doc_id(task_id: str, gen: str, node_id: str) -> str:
    return json.dumps([task_id, gen, node_id])


def graph_doc_id(task_id: str, gen: str) -> str:
    """The graph's document in ``flowkit_graphs``, of the same generation as the nodes."""
    return json.dumps([task_id, gen])


def _node_from_doc(doc: dict[str, Any]) -> NodeStatus:
    return NodeStatus.model_validate(decode_keys({k: v for k, v in doc.items() if k not in _NOT_NODE_STATUS}))


class TaskNodes(MongoStorePart):
    """The node methods of :class:`~flowkit.store.mongo.MongoStore`."""

    _tasks: Any
    _nodes: Any
    _graphs: Any
    _gens: dict[str, str]
    _node_ids: dict[str, frozenset[str]]  # generation → its node ids

    async def _gen(self, task_id: str, *, fresh: bool = False) -> str:
        """The task's generation (cached: it never changes while the task exists)."""
        if not fresh and task_id in self._gens:
            return self._gens[task_id]
        doc = await self._tasks.find_one({"_id": task_id}, {"order": 1})
        if doc is None:
            self._gens.pop(task_id, None)
            raise TaskNotFound(task_id)
        self._gens[task_id] = gen = str(doc["order"])
        return gen

    async def _unknown_node(self, task_id: str, gen: str, node_ids: Iterable[str]) -> str | None:
        """The first of ``node_ids`` the task's generation has no document for, if any
        (the ids are read once per generation, then kept: a graph never changes)."""
        known = self._node_ids.get(gen)
        if known is None or not known.issuperset(node_ids):
            found = await self._nodes.distinct("node_id", {"task_id": task_id, "gen": gen})
            known = self._node_ids[gen] = frozenset(found)
        return next((n for n in node_ids if n not in known), None)

    async def _insert_nodes(self, task_id: str, gen: str, nodes: list[NodeStatus], fence: int) -> None:
        """Insert-only: a document already there (the same creation tried again) is kept."""
        docs = [
            {
                "_id": node_doc_id(task_id, gen, node.node_id),
                "task_id": task_id,
                "gen": gen,
                "fence": fence,
                **encode_keys(node.model_dump(mode="json")),
            }
            for node in nodes
        ]
        if not docs:
            return
        self._node_ids[gen] = frozenset(node.node_id for node in nodes)
        await insert_new(self._nodes, docs)  # those a creation retried wrote already stay

    async def _write_nodes(
        self, task_id: str, gen: str, updates: dict[str, dict[str, Any]], token: int | None
    ) -> bool:
        """Dumped node fields per node id; False unless every node matched. Nodes given the
        same fields (a fan-out's dispatches) go in one ``update_many`` by ``_id`` (on
        FerretDB 0.15 ms a node, against 0.3-0.5 in a bulk of single updates), the rest in
        one bulk request."""
        if not updates:
            return True
        fence: dict[str, Any] = {} if token is None else {"fence": {"$lte": token}}
        stamp: dict[str, Any] = {} if token is None else {"fence": token}
        alike: dict[str, list[str]] = {}
        for node_id, fields in updates.items():
            alike.setdefault(json.dumps(fields, sort_keys=True, default=repr), []).append(node_id)
        matched, singles = 0, []
        for node_ids in alike.values():
            fields = {**updates[node_ids[0]], **stamp}
            ids = [node_doc_id(task_id, gen, n) for n in node_ids]
            if len(ids) == 1:
                singles.append(UpdateOne({"_id": ids[0], **fence}, {"$set": fields}))
                continue
            for chunk in in_chunks(ids, IDS_PER_READ):
                query = {"_id": {"$in": list(chunk)}, **fence}
                matched += int((await self._nodes.update_many(query, {"$set": fields})).matched_count)
        matched += await bulk_update(self._nodes, singles)
        return matched == len(updates)

    async def _stamp_nodes(self, task_id: str, gen: str, token: int) -> None:
        """Move every node of the task on to ``token``: a stale owner's writes are refused."""
        node_ids = await self._listed_node_ids(task_id, gen)
        stale = {"fence": {"$lt": token}}
        if node_ids is None:
            query = {"task_id": task_id, "gen": gen} | stale
            await self._nodes.update_many(query, {"$set": {"fence": token}})
            return
        ids = [node_doc_id(task_id, gen, n) for n in sorted(node_ids)]
        for chunk in in_chunks(ids, IDS_PER_READ):
            await self._nodes.update_many({"_id": {"$in": list(chunk)}} | stale, {"$set": {"fence": token}})

    async def _task_nodes(self, task_id: str, gen: str) -> dict[str, NodeStatus]:
        """One task's nodes, in node id order, read by their ``_id``s (one round trip up
        to ``IDS_PER_READ`` nodes)."""
        node_ids = await self._listed_node_ids(task_id, gen)
        if node_ids is None:
            return (await self._nodes_of({task_id: gen}))[task_id]
        docs = await find_by_ids(self._nodes, [node_doc_id(task_id, gen, n) for n in sorted(node_ids)])
        nodes = {node.node_id: node for node in map(_node_from_doc, docs)}
        return {node_id: nodes[node_id] for node_id in sorted(nodes)}

    async def _listed_node_ids(self, task_id: str, gen: str) -> frozenset[str] | None:
        """The generation's node ids, as its graph document lists them (None for a task
        stored before they were listed). Reads and writes of every node go by ``_id``:
        FerretDB 1.24 answers a filter on any other field by decoding every document of
        the collection (a read of one task's nodes by ``task_id`` took 1.6 s with 50 tasks
        of 20 nodes under load), while a filter with an ``_id`` is an index search."""
        node_ids = self._node_ids.get(gen)
        if node_ids is None:
            graph = await self._graphs.find_one({"_id": graph_doc_id(task_id, gen)}, {"node_ids": 1})
            if graph is None or "node_ids" not in graph:
                return None
            # Kept like the ids found in documents: the graph and its nodes are written
            # before the task document makes them live, and a graph never changes.
            node_ids = self._node_ids[gen] = frozenset(graph["node_ids"])
        return node_ids

    async def _nodes_of(self, gens: dict[str, str]) -> dict[str, dict[str, NodeStatus]]:
        """The live generation's nodes of each task in ``gens`` (task id → generation)."""
        if not gens:
            return {}
        query: dict[str, Any] = (
            {"task_id": next(iter(gens))} if len(gens) == 1 else {"task_id": {"$in": sorted(gens)}}
        )
        nodes: dict[str, dict[str, NodeStatus]] = {task_id: {} for task_id in gens}
        for doc in await self._nodes.find(query).to_list(length=None):
            if gens.get(doc["task_id"]) == doc.get("gen"):
                node = _node_from_doc(doc)
                nodes[doc["task_id"]][node.node_id] = node
        for task_id, gen in gens.items():
            self._node_ids[gen] = frozenset(nodes[task_id])
        return nodes

    async def node_state(self, task_id: str, node_id: str) -> State | None:
        return (await self.node_states([(task_id, node_id)]))[0]

    async def node_states(self, keys: Sequence[tuple[str, str]]) -> list[State | None]:
        """One read by ``_id``s; a second for the nodes not found, in case a task's cached
        generation is stale (a task deleted and created again under its id)."""
        states: dict[tuple[str, str], State] = {}
        for fresh in (False, True):
            wanted = [key for key in dict.fromkeys(keys) if key not in states]
            gens: dict[str, str] = {}
            for task_id in dict.fromkeys(task_id for task_id, _ in wanted):
                with contextlib.suppress(TaskNotFound):
                    gens[task_id] = await self._gen(task_id, fresh=fresh)
            ids = {node_doc_id(t, gens[t], n): (t, n) for t, n in wanted if t in gens}
            for doc in await find_by_ids(self._nodes, list(ids), {"status": 1}):
                states[ids[doc["_id"]]] = State(doc["status"])
            if len(states) == len(set(keys)):
                break
        return [states.get(key) for key in keys]
