"""The MongoDB store: pymongo's async client (``AsyncMongoClient``) or a motor database.

Collections (names in :data:`COLLECTIONS`):

- ``flowkit_tasks``: one document per task, ``_id`` = task id, its own fields, its
  holder in ``owner`` and ``fence`` (the token, +1 at each claim) and its creation id
  ``order`` (also the generation of its nodes and graph);
- ``flowkit_nodes``: one small document per node (:mod:`.mongo_nodes`), so a node
  write costs a small document's write whatever the size of the task;
- ``flowkit_graphs``: the graph as JSON text, one document per task;
- ``flowkit_coordinators``: one document per coordinator, its liveness ``until``: a
  task is held while its owner is live (:mod:`.mongo_leases`);
- ``flowkit_cancels``: the cancel and suspend requests of each task (:mod:`.mongo_requests`);
- ``flowkit_artifacts``: one document per (task, node, batch uid), unique, with a
  ``seq`` unique per node that never changes once given and has no gaps;
- ``flowkit_seq``: per node, the last ``seq`` given, a hint (:mod:`.mongo_artifacts`);
- ``flowkit_batches``: one document per counted batch, unique per (task, node, batch
  uid): the first insert wins;
- ``flowkit_checkpoints``: one document per (task, node);
- ``flowkit_claims``: one ticket per (task, fence token), so that of racing claimers
  exactly one wins (:mod:`.mongo_leases`);
- ``flowkit_runs`` and ``worker_states``: what workers write (:mod:`.mongo_workers`).

Only single-document operations, conditional where races matter (FerretDB, the
MongoDB-protocol server of the tests, has no transactions and no change streams), and
one writer per document at a time: FerretDB 1.24 applies an update as a read-modify-write
of the whole document, so concurrent writers of one document lose each other's changes.
A task document and its node documents are written by its creation, a claim, a
release and its owner's fenced writes (the fence in the filter: a coordinator that lost
the task writes nothing); renewals and cancel requests write documents of their own. Keys MongoDB
cannot store (``.``, a leading ``$``) are percent-encoded in every stored mapping and
decoded on read (:mod:`.mongo_keys`), so any node id, metric name or user key round-trips.

MongoDB cannot notify this process of other processes' writes: :meth:`version` counts
this process's own writes and the changes it was told of (:meth:`notice`), and
:meth:`wait_changed` returns at either or after ``timeout``. Readers of other
processes' writes (the artifact feed) therefore poll, every ``poll_ms``, unless a
change feed (:meth:`set_change_listener` on the writer, :meth:`notice` on the reader)
carries the news.

Example::

    from pymongo import AsyncMongoClient

    store = MongoStore(AsyncMongoClient("mongodb://mongo:27017")["flowkit"])
    await store.ensure_indexes()
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import cache
from typing import Any

from bson import ObjectId
from pydantic import TypeAdapter
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from ..errors import FlowKitError, LeaseLost, NodeNotFound, TaskNotFound
from ..states import NodeStatus, State, TaskStatus
from .base import Fence
from .changes import ChangeTracker
from .fields import check_names, task_fields_to_write
from .mongo_artifacts import ArtifactStreams
from .mongo_batches import BatchRecords
from .mongo_keys import decode_keys, encode_keys
from .mongo_leases import TaskLeases
from .mongo_nodes import graph_doc_id
from .mongo_requests import TaskRequests
from .mongo_workers import WorkerRecords

log = logging.getLogger(__name__)

TASKS = "flowkit_tasks"
NODES = "flowkit_nodes"
GRAPHS = "flowkit_graphs"
ARTIFACTS = "flowkit_artifacts"
SEQUENCES = "flowkit_seq"
BATCHES = "flowkit_batches"
CHECKPOINTS = "flowkit_checkpoints"
CLAIMS = "flowkit_claims"
COORDINATORS = "flowkit_coordinators"
CANCELS = "flowkit_cancels"
RUNS = "flowkit_runs"
WORKER_STATES = "worker_states"
COLLECTIONS = (
    TASKS,
    NODES,
    GRAPHS,
    ARTIFACTS,
    SEQUENCES,
    BATCHES,
    CHECKPOINTS,
    CLAIMS,
    COORDINATORS,
    CANCELS,
    RUNS,
    WORKER_STATES,
)

_NO_ID = {"_id": 0}
# Stored, not in TaskStatus (owner_until, cancel_requested: documents of earlier versions).
_NOT_STATUS = (
    *("_id", "nodes", "graph", "order", "fence"),
    *("owner_until", "cancel_requested", "suspend_requested"),
)


@cache
def _field_adapter(model: type[TaskStatus] | type[NodeStatus], name: str) -> TypeAdapter[Any]:
    info = model.model_fields.get(name)
    if info is None or info.annotation is None or name in ("task_id", "node_id"):
        raise AttributeError(f"{model.__name__} has no updatable field '{name}'")
    return TypeAdapter(info.annotation)


def _dump_fields(model: type[TaskStatus] | type[NodeStatus], fields: dict[str, Any]) -> dict[str, Any]:
    """Validate each field as the model declares it and dump it as stored (JSON-like)."""
    check_names(model, fields)
    out = {}
    for name, value in fields.items():
        adapter = _field_adapter(model, name)
        out[name] = encode_keys(adapter.dump_python(adapter.validate_python(value), mode="json"))
    return out


def _task_from_doc(doc: dict[str, Any]) -> TaskStatus:
    doc = decode_keys({k: v for k, v in doc.items() if k not in _NOT_STATUS})
    return TaskStatus.model_validate(doc)


class MongoStore(ChangeTracker, ArtifactStreams, BatchRecords, TaskLeases, TaskRequests, WorkerRecords):
    """The :class:`~flowkit.store.base.Store` on MongoDB (or FerretDB).

    ``db`` is a ``pymongo.AsyncMongoClient`` database or a motor
    ``AsyncIOMotorDatabase``: both have the same method names. Indexes are created by
    :meth:`ensure_indexes` (idempotent), or before the first write otherwise.
    """

    def __init__(self, db: Any) -> None:
        super().__init__()
        self.db = db
        self._tasks = db[TASKS]
        self._nodes = db[NODES]
        self._graphs = db[GRAPHS]
        self._artifacts = db[ARTIFACTS]
        self._sequences = db[SEQUENCES]
        self._batches = db[BATCHES]
        self._checkpoints = db[CHECKPOINTS]
        self._claims = db[CLAIMS]
        self._coordinators = db[COORDINATORS]
        self._cancels = db[CANCELS]
        self._runs = db[RUNS]
        self._workers = db[WORKER_STATES]
        self._indexed = False
        self._index_lock = asyncio.Lock()
        self._known: set[str] = set()  # tasks seen to exist (forgotten when deleted here)
        self._gens: dict[str, str] = {}  # task id → the generation of its nodes (mongo_nodes)
        self._node_ids: dict[str, frozenset[str]] = {}
        self._last_seqs: dict[tuple[str, str], int] = {}  # mongo_artifacts

    # -- setup ---------------------------------------------------------------------

    async def ensure_indexes(self) -> None:
        """Create the store's indexes if missing; safe to call any number of times."""
        if self._indexed:
            return
        async with self._index_lock:
            if not self._indexed:
                await self._create_indexes()
                self._indexed = True

    async def _create_indexes(self) -> None:
        node = [("task_id", ASCENDING), ("node_id", ASCENDING)]
        await self._artifacts.create_index([*node, ("batch_uid", ASCENDING)], unique=True, name="batch")
        await self._artifacts.create_index([*node, ("seq", ASCENDING)], unique=True, name="seq")
        await self._batches.create_index([*node, ("batch_uid", ASCENDING)], unique=True, name="batch")
        await self._checkpoints.create_index(node, unique=True, name="node")
        await self._tasks.create_index([("status", ASCENDING), ("order", DESCENDING)], name="state")
        await self._tasks.create_index([("owner", ASCENDING)], name="owner")
        await self._nodes.create_index([("task_id", ASCENDING)], name="task")
        await self._graphs.create_index([("task_id", ASCENDING)], name="task")
        await self._claims.create_index([("task_id", ASCENDING)], name="task")
        await self._runs.create_index([*node, ("attempt", ASCENDING)], name="task")
        await self._runs.create_index([("worker_id", ASCENDING), ("state", ASCENDING)], name="worker")

    async def _require(self, task_id: str) -> None:
        """Raise TaskNotFound unless the task exists (one query per task and process)."""
        if task_id in self._known:
            return
        if await self._tasks.find_one({"_id": task_id}, {"_id": 1}) is None:
            raise TaskNotFound(task_id)
        self._known.add(task_id)

    # -- tasks ---------------------------------------------------------------------

    async def create_task(
        self, status: TaskStatus, graph: dict[str, Any], *, owner: str | None = None, lease_sec: float = 0.0
    ) -> bool:
        """Insert a new task with its graph; False (nothing written) if the id exists.

        Insert-only, never a replace: a task id in use keeps its batch records and
        artifacts, and they are never mixed into a task created afresh. A
        ``cancel_requested`` in ``status`` is stored as the task's cancel request.
        """
        await self.ensure_indexes()
        task_id = status.task_id
        if await self._tasks.find_one({"_id": task_id}, {"_id": 1}) is not None:
            return False
        order = ObjectId()
        gen, fence = str(order), 0 if owner is None else 1
        # Graph and nodes first, under a generation of this call's own; the task document
        # last: it makes them live (a creation cut short leaves only unreachable records).
        # As JSON text: FerretDB stores no nested arrays, and graphs have them (edges).
        await self._graphs.insert_one(
            {
                "_id": graph_doc_id(task_id, gen),
                "task_id": task_id,
                "graph": json.dumps(graph),
                "node_ids": sorted(status.nodes),  # the node documents, each read by its _id
            }
        )
        await self._insert_nodes(task_id, gen, list(status.nodes.values()), fence)
        doc = encode_keys(
            status.model_dump(mode="json", exclude={"nodes", "cancel_requested", "suspend_requested"})
        )
        doc.update(_id=task_id, order=order, owner=owner, fence=fence)
        if owner is not None:  # live before the task shows: held from its first moment
            await self._keep_alive(owner, time.time() + lease_sec)
        try:
            await self._tasks.insert_one(doc)
        except DuplicateKeyError:  # a racing creation won: ours is left unreachable, remove it
            await self._graphs.delete_one({"_id": graph_doc_id(task_id, gen)})
            await self._nodes.delete_many({"task_id": task_id, "gen": gen})
            return False
        if status.cancel_requested is not None:
            await self._write_request(task_id, order, {"reason": status.cancel_requested})
        self._known.add(task_id)
        self._gens[task_id] = gen
        self._bump(task_id)
        return True

    async def get_task(self, task_id: str) -> TaskStatus | None:
        """The task document, then its nodes and its cancel request (read together)."""
        doc = await self._tasks.find_one({"_id": task_id})
        if doc is None:
            return None
        status = _task_from_doc(doc)
        gen = self._gens[task_id] = str(doc["order"])
        nodes, requests = await asyncio.gather(
            self._task_nodes(task_id, gen), self._requests_of(task_id, doc.get("order"))
        )
        status.nodes = nodes
        status.cancel_requested = requests.get("reason")
        status.suspend_requested = requests.get("suspend")
        return status

    async def get_graph(self, task_id: str) -> dict[str, Any] | None:
        try:
            gen = await self._gen(task_id, fresh=True)
        except TaskNotFound:
            return None
        doc = await self._graphs.find_one({"_id": graph_doc_id(task_id, gen)})
        if doc is None:
            return None
        graph: dict[str, Any] = json.loads(doc["graph"])
        return graph

    async def update_task(self, task_id: str, fields: dict[str, Any], *, fence: Fence | None = None) -> None:
        """Set task fields (``status``, ``result``, ``error``, ...) in one update."""
        await self.write_task(task_id, fields, {}, fence=fence)

    async def update_node(
        self, task_id: str, node_id: str, fields: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Set node fields (one small document's update)."""
        await self.write_task(task_id, {}, {node_id: fields}, fence=fence)

    async def write_task(
        self,
        task_id: str,
        task_fields: dict[str, Any],
        node_fields: dict[str, dict[str, Any]],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Nodes' fields in one round trip, then the task's fields in one update.

        Every named node must exist (an unknown node id must not create a half node
        record); with ``fence``, every document written must not have been written under
        a later token, and the task document must name the fence's owner and token.
        Nodes go first: a write cut short leaves node states the task has not yet
        summed up, which its owner (or the next one, rebuilding) does again.
        """
        update = _dump_fields(TaskStatus, task_fields_to_write(task_fields, fence))
        nodes = {node_id: _dump_fields(NodeStatus, f) for node_id, f in node_fields.items()}
        token = fence.token if fence is not None else None
        gen = await self._gen(task_id)
        if await self._unknown_node(task_id, gen, nodes) is not None:
            gen = await self._gen(task_id, fresh=True)  # created afresh since we cached it?
            missing = await self._unknown_node(task_id, gen, nodes)
            if missing is not None:
                raise NodeNotFound(task_id, missing)
        if not await self._write_nodes(task_id, gen, nodes, token):
            raise await self._refusal(task_id, fence)
        query: dict[str, Any] = {"_id": task_id}
        if fence is not None:
            query.update(owner=fence.owner, fence=fence.token)
        if update:
            matched = (await self._tasks.update_one(query, {"$set": update})).matched_count > 0
        elif not nodes:  # nothing to set: the same checks, as a read
            matched = await self._tasks.find_one(query, {"_id": 1}) is not None
        else:  # the node documents carried the fence
            matched = True
        if not matched:
            raise await self._refusal(task_id, fence)
        self._known.add(task_id)
        self._bump(task_id)

    async def _refusal(self, task_id: str, fence: Fence | None) -> FlowKitError:
        """Why a guarded write of a task whose nodes all exist matched nothing."""
        try:
            await self._gen(task_id, fresh=True)
        except TaskNotFound as exc:
            self._known.discard(task_id)
            return exc
        if fence is not None:  # tokens only grow: a fence that failed once stays stale
            return LeaseLost(task_id, fence.owner, fence.token)
        return TaskNotFound(task_id)  # it was missing at the write and created since

    async def reopen_task(
        self, task_id: str, task_fields: dict[str, Any], node_fields: dict[str, dict[str, Any]]
    ) -> bool:
        """Make a failed or cancelled task runnable again (``retry_task``): one update,
        conditional on the task still being failed or cancelled, that leaves it unowned so
        any coordinator adopts it. Its cancel request goes first (an adopter would carry
        it out again). False, nothing written, if the task is not failed or cancelled."""
        ended = [State.FAILED.value, State.CANCELLED.value]
        if await self._tasks.find_one({"_id": task_id, "status": {"$in": ended}}, {"_id": 1}) is None:
            return False
        await self._cancels.update_one({"_id": task_id}, {"$unset": {"reason": "", "at": ""}})
        update = _dump_fields(TaskStatus, task_fields_to_write(task_fields, None))
        nodes = {node_id: _dump_fields(NodeStatus, f) for node_id, f in node_fields.items()}
        await self._write_nodes(task_id, await self._gen(task_id, fresh=True), nodes, None)
        update["owner"] = None
        query = {"_id": task_id, "status": {"$in": ended}}
        if (await self._tasks.update_one(query, {"$set": update})).matched_count == 0:
            return False
        self._bump(task_id)
        return True

    async def delete_task(self, task_id: str) -> bool:
        """Remove the task and everything recorded for it; True if the task existed.

        The task document goes last: until it is gone no ``create_task`` can reuse the
        id, so a task created afresh never sees the old one's records; a delete cut short
        is finished by calling it again. Seq hints go before the artifacts that name
        their nodes. Writers still busy with the task may leave records behind: delete
        tasks that are terminal.
        """
        node_ids = set(await self._nodes.distinct("node_id", {"task_id": task_id}))
        node_ids.update(await self._artifacts.distinct("node_id", {"task_id": task_id}))
        hints = [json.dumps([task_id, node_id]) for node_id in sorted(node_ids)]
        await self._sequences.delete_many({"_id": {"$in": hints}})
        records_of_task = (self._artifacts, self._batches, self._checkpoints, self._runs, self._claims)
        for records in (*records_of_task, self._nodes, self._graphs):
            await records.delete_many({"task_id": task_id})
        await self._cancels.delete_one({"_id": task_id})
        deleted: bool = (await self._tasks.delete_one({"_id": task_id})).deleted_count > 0
        self._known.discard(task_id)
        self._node_ids.pop(self._gens.pop(task_id, ""), None)
        for stream in [s for s in self._last_seqs if s[0] == task_id]:
            del self._last_seqs[stream]
        if deleted:
            self._bump(task_id)
        return deleted

    async def list_tasks(self, states: set[State] | None = None, limit: int = 100) -> list[TaskStatus]:
        """The ``limit`` most recently created tasks (in any of ``states``), oldest first,
        ``cancel_requested`` left None (one read for all: :meth:`get_task` has it)."""
        query = {} if states is None else {"status": {"$in": sorted(s.value for s in states)}}
        cursor = self._tasks.find(query).sort("order", DESCENDING).limit(limit)
        docs = list(reversed(await cursor.to_list(length=limit)))
        nodes = await self._nodes_of({d["_id"]: str(d["order"]) for d in docs})
        tasks = [_task_from_doc(d) for d in docs]
        for task in tasks:
            task.nodes = nodes[task.task_id]
        return tasks

    # -- change notification -----------------------------------------------------------

    async def wait_changed(self, task_id: str, since: int, timeout: float) -> int:
        """Return at this process's next write to the task or :meth:`notice` of it, or
        after ``timeout`` (the poll interval): other writes are seen only by reading again."""
        await self._require(task_id)
        return await self._wait_version(task_id, since, timeout)
