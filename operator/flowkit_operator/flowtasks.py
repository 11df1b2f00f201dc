"""What the operator does for a FlowTask, idempotently: judge the graph, make sure its
task exists, carry out suspend/resume and retry requests, deadlines and TTLs, and clean
up once the FlowTask is gone. Called by the kopf handlers (:mod:`.flowtask_handlers`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes_asyncio import client

from flowkit.errors import GraphError
from flowkit.graph import validate_graph
from flowkit.states import State, TaskStatus

from .engine import Engine
from .events import Events
from .kube import (
    FLOWTASKS,
    GROUP,
    MANAGED_BY,
    VERSION,
    ObjectRef,
    custom_api,
    is_not_found,
    patch_flowtask_status,
)
from .status_mirror import StatusMirror, Tracked
from .status_view import (
    DEADLINE_EXCEEDED,
    FINISHED_PHASES,
    INVALID,
    Facts,
    invalid_status,
    parse_rfc3339,
)
from .timers import Timers

log = logging.getLogger("flowkit_operator.flowtasks")

NAMESPACE_LABEL, NAME_LABEL = "flowkit.io/namespace", "flowkit.io/name"
GRAPH_IMMUTABLE = "spec.graph cannot be changed once the FlowTask exists; create a new FlowTask"


def labels_for(ref: ObjectRef) -> dict[str, str]:
    """The labels of a FlowTask's task in the store: how the sweep knows it is ours."""
    return {**MANAGED_BY, NAMESPACE_LABEL: ref.namespace, NAME_LABEL: ref.name}


class FlowTasks:
    def __init__(
        self, engine: Engine, mirror: StatusMirror, events: Events, api: Any, timers: Timers
    ) -> None:
        self.engine = engine
        self.mirror = mirror
        self.events = events
        self.timers = timers
        self._custom = custom_api(api)

    # -- create / resume / update ------------------------------------------------------

    async def reconcile(self, body: Any, *, resumed: bool) -> None:
        """Bring the task in line with the FlowTask ``body`` (safe to repeat)."""
        ref = ObjectRef.of(body)
        spec, status = body.get("spec") or {}, dict(body.get("status") or {})
        if status.get("phase") == INVALID:
            return
        task = await self.engine.status(ref.uid)
        if task is None:
            problems = self._problems(spec.get("graph"))
            if problems:
                await self._mark_invalid(ref, problems, body["metadata"].get("generation"))
                return
            try:
                await self.engine.create(
                    ref.uid,
                    spec["graph"],
                    dict(spec.get("params") or {}),
                    labels_for(ref),
                    suspended=bool(spec.get("suspend", False)),
                )
            except GraphError as exc:  # e.g. more nodes than the coordinator allows
                await self._mark_invalid(
                    ref, [str(p) for p in exc.problems], body["metadata"].get("generation")
                )
                return
            task = await self.engine.status(ref.uid)
            if task is None:
                raise RuntimeError(f"task {ref.uid} was created but cannot be read back")
            self.events.normal(ref, "Started", f"task {ref.uid} created with {len(task.nodes)} nodes")
        tracked = self.mirror.track(ref, self._facts(body, task), status, quiet=resumed)
        await self._suspend_or_resume(tracked, task, bool(spec.get("suspend", False)))
        await self._retry_if_asked(tracked, task, int(spec.get("retry") or 0))
        self._schedule_deadline(tracked)
        self.mirror.changed(ref.uid)

    def _problems(self, graph: Any) -> list[str]:
        if not isinstance(graph, dict):
            return ["spec.graph: must be an object with nodes (and edges)"]
        try:
            validate_graph(graph)
        except GraphError as exc:
            return [str(p) for p in exc.problems]
        return []

    async def _mark_invalid(self, ref: ObjectRef, problems: list[str], generation: int | None) -> None:
        status = invalid_status(problems, generation, time.time())
        await self._patch_status(ref, status)
        self.events.warning(ref, "InvalidGraph", status["message"])

    def _facts(self, body: Any, task: TaskStatus) -> Facts:
        status = body.get("status") or {}
        graph = (body.get("spec") or {}).get("graph") or {}
        max_attempts = {}
        for node in graph.get("nodes") or []:
            policy = node.get("retry_policy") or {}
            max_attempts[str(node.get("node_id"))] = int(policy.get("max", 1) or 1)
        known = self.mirror.get(ObjectRef.of(body).uid)
        facts = known.facts if known is not None else Facts()
        facts.generation = body["metadata"].get("generation")
        facts.max_attempts = max_attempts
        spec = body.get("spec") or {}
        facts.deadline_seconds = _seconds(spec.get("activeDeadlineSeconds"))
        facts.ttl_seconds = _seconds(spec.get("ttlSecondsAfterFinished"))
        if known is None:
            facts.observed_retry = int(status.get("observedRetry") or 0)
            facts.started_at = parse_rfc3339(status.get("startedAt")) or task.created_at
            facts.deadline_exceeded = status.get("reason") == DEADLINE_EXCEEDED
        return facts

    async def _suspend_or_resume(self, tracked: Tracked, task: TaskStatus, wanted: bool) -> None:
        asked = task.suspend_requested if task.suspend_requested is not None else task.suspended
        if task.status.terminal or asked == wanted:
            return
        if wanted:
            await self.engine.suspend(tracked.task_id)
            self.events.normal(tracked.ref, "Suspended", "suspended: running nodes finish, no new ones start")
        else:
            await self.engine.resume(tracked.task_id)
            self.events.normal(tracked.ref, "Resumed", "resumed: held-back nodes start again")

    async def _retry_if_asked(self, tracked: Tracked, task: TaskStatus, wanted: int) -> None:
        facts = tracked.facts
        if wanted <= facts.observed_retry:
            return
        if task.status not in (State.FAILED, State.CANCELLED):
            facts.observed_retry = wanted
            self.events.warning(
                tracked.ref,
                "RetryIgnored",
                f"retry {wanted} ignored: the task is {task.status.value}; retry re-runs a Failed task",
            )
            return
        nodes = await self.engine.retry(tracked.task_id)
        facts.observed_retry = wanted
        facts.deadline_exceeded = False
        facts.started_at = time.time()
        self.timers.cancel(_ttl_key(tracked.task_id))
        listed = ", ".join(nodes[:10]) + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else "")
        self.events.normal(tracked.ref, "Retrying", f"retry {wanted}: re-running {listed or 'no nodes'}")

    async def graph_changed(self, body: Any) -> None:
        """The CRD refuses it; if it got through anyway, nothing changes but the user is told."""
        ref = ObjectRef.of(body)
        self.events.warning(ref, "GraphImmutable", f"{GRAPH_IMMUTABLE}; the change is ignored")
        await self._patch_status(ref, {"message": f"{GRAPH_IMMUTABLE} (the change is ignored)"})

    # -- deadlines and TTLs --------------------------------------------------------------

    def _schedule_deadline(self, tracked: Tracked) -> None:
        key = _deadline_key(tracked.task_id)
        seconds = tracked.facts.deadline_seconds
        if seconds is None or tracked.phase in FINISHED_PHASES or tracked.facts.started_at is None:
            self.timers.cancel(key)
            return
        self.timers.at(
            key, tracked.facts.started_at + float(seconds), lambda: self._deadline(tracked, seconds)
        )

    async def _deadline(self, tracked: Tracked, seconds: float) -> None:
        task = await self.engine.status(tracked.task_id)
        if task is None or task.status.terminal or self.mirror.get(tracked.task_id) is not tracked:
            return
        tracked.facts.deadline_exceeded = True
        self.events.warning(
            tracked.ref, DEADLINE_EXCEEDED, f"active deadline of {seconds:g}s exceeded: cancelling the task"
        )
        await self.engine.cancel(tracked.task_id, f"{DEADLINE_EXCEEDED}: activeDeadlineSeconds={seconds:g}")
        self.mirror.changed(tracked.task_id)

    def status_written(self, tracked: Tracked, task: TaskStatus, before: str | None) -> None:
        """After each status write: a finished FlowTask's TTL starts, a running one's stops."""
        key = _ttl_key(tracked.task_id)
        finished_at = parse_rfc3339(tracked.last.get("finishedAt"))
        ttl = tracked.facts.ttl_seconds
        if tracked.phase not in FINISHED_PHASES or finished_at is None or ttl is None:
            self.timers.cancel(key)
            return
        if tracked.phase != before or not self.timers.pending(key):
            self.timers.cancel(_deadline_key(tracked.task_id))
            self.timers.at(key, finished_at + float(ttl), lambda: self._expire(tracked, ttl))

    async def _expire(self, tracked: Tracked, ttl: float) -> None:
        ref = tracked.ref
        log.info(
            "FlowTask %s/%s: ttlSecondsAfterFinished=%s passed, deleting it", ref.namespace, ref.name, ttl
        )
        try:
            await self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, FLOWTASKS, ref.name, body={"preconditions": {"uid": ref.uid}}
            )
        except client.ApiException as exc:
            if not is_not_found(exc) and exc.status != 409:
                raise

    # -- deletion ------------------------------------------------------------------------

    async def gone(self, task_id: str) -> None:
        """The FlowTask was deleted: cancel its task and delete it from the store."""
        self.mirror.untrack(task_id)
        self.timers.cancel(_deadline_key(task_id))
        self.timers.cancel(_ttl_key(task_id))
        if await self.engine.delete(task_id):
            log.info("task %s cancelled and deleted with its FlowTask", task_id)

    async def _patch_status(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        await patch_flowtask_status(self._custom, ref, status)  # gone: its deletion is handled elsewhere


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _deadline_key(task_id: str) -> str:
    return f"deadline/{task_id}"


def _ttl_key(task_id: str) -> str:
    return f"ttl/{task_id}"
