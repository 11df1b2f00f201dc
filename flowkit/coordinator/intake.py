"""Status intake: what workers report about attempts, applied to the tasks this coordinator holds.

Every coordinator reads every status message (a broadcast subscription) and applies
those of the tasks it holds; the others belong to other coordinators. Nothing is
acknowledged because nothing depends on it: a worker writes each fact to the store
*before* it sends the message (its run record, batch records, artifacts), so the
message is a fast copy of a durable fact. A coordinator that missed one (it was
adopting the task, it crashed, the apply raised) finds the fact in the store when it
reconciles the attempt (:meth:`StatusIntake.reconcile`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import CoordinatorConfig
from ..metrics import add_metrics, numeric_metrics, sum_metrics
from ..protocol import Envelope, Kind
from ..states import NodeError, State
from ..store.base import RunRecord, Store
from .executor import Executor
from .taskrun import TaskRun

log = logging.getLogger("flowkit.coordinator")

WORKER_LOST = "worker_lost"


class StatusIntake:
    def __init__(self, cfg: CoordinatorConfig, store: Store, executor: Executor) -> None:
        self.cfg = cfg
        self.store = store
        self.executor = executor

    def on_status(self, run: TaskRun, msg: Envelope) -> None:
        sched, now, node_id = run.scheduler, time.time(), msg.node_id
        node = sched.nodes.get(node_id)
        if node is None or msg.attempt != node.attempt or node.state.terminal:
            # A stale attempt (zombie worker, late or replayed message), or a node that has
            # ended: a batch report a producer delivered late, after its send had timed out
            # (a broker restart), must not count again once the node's count is final.
            return
        apply, lease_until = self.executor.apply, now + self.cfg.worker_lease_ttl_sec
        if node.state == State.QUEUED and msg.kind in _OUTCOMES and "started_at" in msg.payload:
            # A short run says it started in its outcome (no accepted message of its own).
            started = min(_number(msg.payload["started_at"], now), now)
            self._started(run, node_id, msg.attempt, msg.worker_id, lease_until, started)
        if msg.kind == Kind.ACCEPTED:
            self._started(run, node_id, msg.attempt, msg.worker_id, lease_until, now)
        elif msg.kind == Kind.HEARTBEAT:
            if node_id in run.worker_lease:
                run.worker_lease[node_id] = lease_until
        elif msg.kind == Kind.ARTIFACT:
            apply(run, sched.first_batch(node_id, msg.attempt, now))
        elif msg.kind == Kind.BATCH_DONE:
            self._batch_done(run, msg.node_id, msg.attempt, _reported_batches(msg.payload), now)
        elif msg.kind == Kind.FINISHED:
            if isinstance(msg.payload.get("batches_done"), list):  # stored with the outcome
                self._batch_done(run, node_id, msg.attempt, _listed(msg.payload["batches_done"]), now)
            final, batches = numeric_metrics(msg.payload.get("metrics")), msg.payload.get("batches")
            self._finish(run, node_id, msg.attempt, final, batches if isinstance(batches, int) else None)
        elif msg.kind == Kind.FAILED:
            error = NodeError.model_validate(msg.payload)
            apply(run, sched.node_failed(node_id, msg.attempt, error, now))
        elif msg.kind == Kind.CANCELLED:
            apply(run, sched.node_cancelled(node_id, msg.attempt, now))
        elif msg.kind == Kind.RELEASED:
            self.lost(run, node_id, msg.attempt, str(msg.payload.get("reason", "worker stopped")))
        elif msg.kind == Kind.DECLINED and node.state == State.QUEUED and self._current_hop(run, msg):
            why = f"worker {msg.worker_id} had no free slot"
            self.executor.send_elsewhere(run, node_id, msg.attempt, why, pause=True)

    @staticmethod
    def _current_hop(run: TaskRun, msg: Envelope) -> bool:
        """A decline of the RUN last sent, not of one sent before it (that one is moot)."""
        return bool(msg.payload.get("hop", 0) == run.hops.get(msg.node_id, 0))

    def reconcile(self, run: TaskRun, record: RunRecord | None, node_id: str, attempt: int) -> None:
        """Bring the node in line with its attempt's run record (a message may be lost)."""
        node = run.scheduler.nodes[node_id]
        if node.attempt != attempt or node.state.terminal:
            return
        now = time.time()
        if record is None:
            return
        if node.state == State.QUEUED and record.state != "released":
            self._started(run, node_id, attempt, record.worker_id, record.lease_until, now)
        if record.state == "running":
            run.worker_lease[node_id] = max(run.worker_lease.get(node_id, 0.0), record.lease_until)
        elif record.state == "finished":
            self._finish(run, node_id, attempt, record.metrics)
        elif record.state == "failed":
            error = record.error or NodeError(code="failed")
            self.executor.apply(run, run.scheduler.node_failed(node_id, attempt, error, now))
        elif record.state == "cancelled":
            self.executor.apply(run, run.scheduler.node_cancelled(node_id, attempt, now))
        elif record.state == "released":
            self.lost(run, node_id, attempt, "worker stopped")

    def lost(self, run: TaskRun, node_id: str, attempt: int, why: str) -> None:
        """The attempt's worker is gone: run the node again, not charged to its retries."""
        log.warning("task %s node %s: attempt %d lost its worker (%s)", run.task_id, node_id, attempt, why)
        actions = run.scheduler.node_lost(node_id, attempt, why, self.cfg.max_worker_losses, time.time())
        self.executor.apply(run, actions)

    def _started(
        self, run: TaskRun, node_id: str, attempt: int, worker_id: str, lease_until: float, started_at: float
    ) -> None:
        """A worker took the attempt: no re-send, its lease runs, the node is running."""
        run.sent_at.pop(node_id, None)
        run.worker_lease[node_id] = lease_until
        if run.status.nodes[node_id].note is not None:
            run.set_node(node_id, {"note": None})
        self.executor.apply(run, run.scheduler.node_started(node_id, attempt, worker_id, started_at))

    def _batch_done(
        self, run: TaskRun, node_id: str, attempt: int, batches: list[tuple[str, Any]], now: float
    ) -> None:
        seen = run.seen_batches.setdefault(node_id, set())
        node = run.status.nodes[node_id]
        metrics, counted = dict(node.metrics), 0
        for uid, batch_metrics in batches:
            if uid in seen:
                continue  # a replayed message: counted already
            seen.add(uid)
            add_metrics(metrics, numeric_metrics(batch_metrics))
            counted += 1
        if not counted:
            return
        run.set_node(node_id, {"batches": node.batches + counted, "metrics": metrics}, may_wait=True)
        self.executor.apply(run, run.scheduler.first_batch(node_id, attempt, now))

    def _finish(
        self, run: TaskRun, node_id: str, attempt: int, final: dict[str, float], batches: int | None = None
    ) -> None:
        """Finish the node with its batches counted exactly once and finalize's metrics merged.

        A first attempt is the only writer of its node's batch records (one worker claims
        an attempt, and no earlier attempt exists), so when the worker's count of them
        (``batches``) is the number of distinct batches this coordinator was told of, its
        sums are the records' sums and the node finishes at once. Otherwise (a later
        attempt, whose zombie predecessor may still have recorded batches nobody reported;
        a message lost; a worker that does not say) they are recounted from the store
        first, beside the intake: other nodes go on meanwhile."""
        seen = run.seen_batches.get(node_id, set())
        counted = run.status.nodes[node_id].batches
        if attempt == 1 and batches is not None and batches == len(seen) == counted:
            metrics = {**run.status.nodes[node_id].metrics, **final}
            run.seen_batches.pop(node_id, None)
            run.set_node(node_id, {"metrics": metrics})
            self.executor.apply(run, run.scheduler.node_finished(node_id, attempt, time.time()))
            return
        job = asyncio.create_task(self._recount_and_finish(run, node_id, attempt, final))
        self.executor.spawn(job)

    async def _recount_and_finish(
        self, run: TaskRun, node_id: str, attempt: int, final: dict[str, float]
    ) -> None:
        node = run.scheduler.nodes[node_id]
        if node.attempt != attempt or node.state.terminal:
            return
        try:
            records = await self.store.batch_records(run.task_id, node_id)
        except Exception as exc:  # the lease check reconciles from the run record later
            log.warning("task %s node %s: could not recount batches (%s)", run.task_id, node_id, exc)
            return
        if node.attempt != attempt or node.state.terminal or run.dropped:
            return
        metrics = sum_metrics(records.values())
        metrics.update(final)
        run.seen_batches.pop(node_id, None)
        run.set_node(node_id, {"batches": len(records), "metrics": metrics})
        self.executor.apply(run, run.scheduler.node_finished(node_id, attempt, time.time()))


_OUTCOMES = frozenset({Kind.FINISHED, Kind.FAILED, Kind.CANCELLED})


def _reported_batches(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """``{"batches": [{"batch_uid", "metrics"}, ...]}``, or the one batch of a worker from
    before group writes (``{"batch_uid", "metrics"}``), during a rolling upgrade."""
    listed = payload.get("batches")
    if isinstance(listed, list):
        return _listed(listed)
    return [(str(payload.get("batch_uid")), payload.get("metrics"))]


def _listed(batches: list[Any]) -> list[tuple[str, Any]]:
    return [(str(b.get("batch_uid")), b.get("metrics")) for b in batches if isinstance(b, dict)]


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
