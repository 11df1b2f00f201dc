"""The pure Scheduler: start decisions, retries, failure propagation, stale events, cancel."""

from __future__ import annotations

from typing import Any

from flowkit import validate_graph
from flowkit.coordinator.scheduler import (
    Action,
    Dispatch,
    NodeChanged,
    RetryLater,
    Scheduler,
    StopRunning,
    TaskEnded,
    TaskSuspended,
)
from flowkit.states import NodeError, State

NOW = 1000.0
TRANSIENT = NodeError(code="timeout", message="slow")


def node(node_id: str, **fields: Any) -> dict[str, Any]:
    return {"node_id": node_id, "type": "w", **fields}


def scheduler(*nodes: dict[str, Any]) -> Scheduler:
    return Scheduler(validate_graph({"nodes": list(nodes)}))


def dispatched(actions: list[Action]) -> list[tuple[str, int]]:
    return [(a.node_id, a.attempt) for a in actions if isinstance(a, Dispatch)]


def ended(actions: list[Action]) -> list[State]:
    return [a.state for a in actions if isinstance(a, TaskEnded)]


def finish(s: Scheduler, node_id: str) -> list[Action]:
    attempt = s.nodes[node_id].attempt
    s.node_started(node_id, attempt, "w1", NOW)
    return s.node_finished(node_id, attempt, NOW)


def fail(s: Scheduler, node_id: str, error: NodeError = TRANSIENT) -> list[Action]:
    attempt = s.nodes[node_id].attempt
    s.node_started(node_id, attempt, "w1", NOW)
    return s.node_failed(node_id, attempt, error, NOW)


def diamond(fan_in: str, **extra: Any) -> Scheduler:
    return scheduler(
        node("a"), node("b"), node("c"), node("join", depends_on=["a", "b", "c"], fan_in=fan_in, **extra)
    )


# --- starting --------------------------------------------------------------------------


def test_start_dispatches_only_nodes_without_dependencies() -> None:
    s = scheduler(node("a"), node("b"), node("c", depends_on=["a", "b"]))
    assert dispatched(s.start()) == [("a", 1), ("b", 1)]
    assert s.state == State.RUNNING


def test_fan_in_all_waits_for_every_dependency() -> None:
    s = diamond("all")
    s.start()
    assert dispatched(finish(s, "a")) == []
    assert dispatched(finish(s, "b")) == []
    assert dispatched(finish(s, "c")) == [("join", 1)]


def test_fan_in_any_starts_on_the_first_dependency() -> None:
    s = diamond("any")
    s.start()
    assert dispatched(finish(s, "b")) == [("join", 1)]
    assert dispatched(finish(s, "a")) == []  # never dispatched twice


def test_fan_in_count_starts_on_the_nth_dependency() -> None:
    s = diamond("count:2")
    s.start()
    assert dispatched(finish(s, "c")) == []
    assert dispatched(finish(s, "a")) == [("join", 1)]
    assert dispatched(finish(s, "b")) == []


def test_ready_node_does_not_start_on_first_batch() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    assert dispatched(s.first_batch("a", 1)) == []
    assert dispatched(s.node_finished("a", 1, NOW)) == [("b", 1)]


def test_first_batch_node_starts_on_a_dependencys_first_batch() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"], io={"start_when": "first_batch"}))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    assert dispatched(s.first_batch("a", 1)) == [("b", 1)]
    assert dispatched(s.first_batch("a", 1)) == []
    assert dispatched(s.node_finished("a", 1, NOW)) == []  # already running


def test_task_finishes_when_every_node_finished() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]))
    s.start()
    assert ended(finish(s, "a")) == []
    assert ended(finish(s, "b")) == [State.FINISHED]
    assert s.state == State.FINISHED


# --- retries ---------------------------------------------------------------------------


def test_transient_failure_is_retried_after_backoff() -> None:
    s = scheduler(node("a", retry_policy={"max": 3, "backoff_sec": 7}))
    s.start()
    actions = fail(s, "a")
    assert [a for a in actions if isinstance(a, RetryLater)] == [RetryLater("a", 2, 7)]
    assert s.nodes["a"].state == State.DEFERRED
    deferred = next(a for a in actions if isinstance(a, NodeChanged))
    assert deferred.fields["status"] == State.DEFERRED
    assert deferred.fields["retry_at"] == NOW + 7
    assert dispatched(s.retry_due("a", 2)) == [("a", 2)]


def test_retries_stop_at_max_attempts_in_total() -> None:
    s = scheduler(node("a", retry_policy={"max": 3}))
    s.start()
    for attempt in (2, 3):
        fail(s, "a")
        assert dispatched(s.retry_due("a", attempt)) == [("a", attempt)]
    actions = fail(s, "a")
    assert not [a for a in actions if isinstance(a, RetryLater)]
    assert s.nodes["a"].state == State.FAILED
    assert ended(actions) == [State.FAILED]


def test_default_policy_makes_one_attempt() -> None:
    s = scheduler(node("a"))
    s.start()
    assert ended(fail(s, "a")) == [State.FAILED]


def test_error_classified_permanent_is_not_retried() -> None:
    s = scheduler(node("a", retry_policy={"max": 5}))
    s.start()
    actions = fail(s, "a", NodeError(code="validation_failed", permanent=True))
    assert not [a for a in actions if isinstance(a, RetryLater)]
    assert ended(actions) == [State.FAILED]


def test_error_code_in_permanent_on_is_not_retried() -> None:
    s = scheduler(node("a", retry_policy={"max": 5, "permanent_on": ["bad_input"]}))
    s.start()
    actions = fail(s, "a", NodeError(code="bad_input"))
    assert not [a for a in actions if isinstance(a, RetryLater)]
    failed = next(a for a in actions if isinstance(a, NodeChanged) and a.fields["status"] == State.FAILED)
    error = failed.fields["error"]
    assert isinstance(error, NodeError) and error.permanent


def test_retry_due_for_a_stale_attempt_is_ignored() -> None:
    s = scheduler(node("a", retry_policy={"max": 3}))
    s.start()
    fail(s, "a")
    assert dispatched(s.retry_due("a", 2)) == [("a", 2)]
    assert s.retry_due("a", 2) == []


# --- failure propagation -----------------------------------------------------------------


def test_failure_fails_dependents_that_can_no_longer_start() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]), node("c", depends_on=["b"]), node("side"))
    s.start()
    actions = fail(s, "a")
    failed = {a.node_id: a.fields["error"] for a in actions if isinstance(a, NodeChanged)}
    assert set(failed) == {"a", "b", "c"}
    assert isinstance(failed["b"], NodeError) and failed["b"].code == "upstream_failed"
    assert ended(actions) == []  # "side" still runs
    assert ended(finish(s, "side")) == [State.FAILED]


def test_any_node_still_runs_when_another_dependency_finishes() -> None:
    s = diamond("any")
    s.start()
    assert dispatched(fail(s, "a")) == []
    assert s.nodes["join"].state == State.QUEUED
    assert dispatched(finish(s, "b")) == [("join", 1)]
    finish(s, "c")
    assert ended(finish(s, "join")) == [State.FAILED]  # "a" failed, so the task did


def test_count_node_fails_once_too_few_dependencies_remain() -> None:
    s = diamond("count:2")
    s.start()
    fail(s, "a")
    assert s.nodes["join"].state == State.QUEUED
    fail(s, "b")
    assert s.nodes["join"].state == State.FAILED


def test_running_streaming_dependent_is_stopped_when_upstream_fails() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"], io={"start_when": "first_batch"}))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    s.first_batch("a", 1)
    s.node_started("b", 1, "w2", NOW)
    actions = s.node_failed("a", 1, TRANSIENT, NOW)
    assert StopRunning("b", 1, "upstream_failed") in actions
    assert ended(actions) == [State.FAILED]


def test_task_ends_failed_only_when_nothing_else_can_run() -> None:
    s = scheduler(node("a"), node("b"))
    s.start()
    assert ended(fail(s, "a")) == []
    assert s.state == State.RUNNING
    assert ended(finish(s, "b")) == [State.FAILED]


# --- stale and duplicate events ------------------------------------------------------------


def test_duplicate_finished_is_ignored() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]))
    s.start()
    assert dispatched(finish(s, "a")) == [("b", 1)]
    assert s.node_finished("a", 1, NOW) == []


def test_status_of_an_old_attempt_is_ignored() -> None:
    s = scheduler(node("a", retry_policy={"max": 2}), node("b", depends_on=["a"]))
    s.start()
    fail(s, "a")
    s.retry_due("a", 2)
    assert s.node_finished("a", 1, NOW) == []
    assert s.node_failed("a", 1, TRANSIENT, NOW) == []
    assert s.nodes["a"].state == State.QUEUED


def test_events_for_unknown_nodes_are_ignored() -> None:
    s = scheduler(node("a"))
    s.start()
    assert s.node_finished("ghost", 1, NOW) == []
    assert s.first_batch("ghost", 1) == []


def test_failure_after_finish_is_ignored() -> None:
    s = scheduler(node("a"))
    s.start()
    finish(s, "a")
    assert s.node_failed("a", 1, TRANSIENT, NOW) == []
    assert s.state == State.FINISHED


# --- cancel ------------------------------------------------------------------------------


def test_cancel_cancels_waiting_nodes_at_once_and_stops_running_ones() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    actions = s.cancel("user", NOW)
    assert StopRunning("a", 1, "user") in actions
    changes = {a.node_id: a.fields["status"] for a in actions if isinstance(a, NodeChanged)}
    assert changes == {"a": State.CANCELLING, "b": State.CANCELLED}
    assert s.state == State.CANCELLING
    assert ended(actions) == []


def test_cancelled_task_ends_when_running_nodes_report() -> None:
    s = scheduler(node("a"), node("b"))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    s.node_started("b", 1, "w1", NOW)
    s.cancel("user", NOW)
    assert ended(s.node_cancelled("a", 1, NOW)) == []
    assert ended(s.node_finished("b", 1, NOW)) == [State.CANCELLED]  # its last word while cancelling
    assert s.nodes["b"].state == State.CANCELLED


def test_cancel_drops_a_pending_retry() -> None:
    s = scheduler(node("a", retry_policy={"max": 3}))
    s.start()
    fail(s, "a")
    assert ended(s.cancel("user", NOW)) == [State.CANCELLED]
    assert s.retry_due("a", 2) == []


def test_cancel_of_an_ended_task_does_nothing() -> None:
    s = scheduler(node("a"))
    s.start()
    finish(s, "a")
    assert s.cancel("user", NOW) == []
    assert s.state == State.FINISHED


def test_failure_while_cancelling_ends_the_node_cancelled() -> None:
    s = scheduler(node("a"))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    s.cancel("user", NOW)
    assert ended(s.node_failed("a", 1, TRANSIENT, NOW)) == [State.CANCELLED]


# --- lost workers and restoring from the store ----------------------------------------------


def test_a_lost_worker_reruns_the_node_without_using_a_retry_and_stops_the_old_attempt() -> None:
    s = scheduler(node("a"))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    actions = s.node_lost("a", 1, "lease expired", max_losses=5, now=NOW)
    assert dispatched(actions) == [("a", 2)]
    assert StopRunning("a", 1, "superseded: lease expired") in actions
    # retry_policy.max is 1: a handler failure of the new attempt is still final, not retried.
    s.node_started("a", 2, "w2", NOW)
    assert ended(s.node_failed("a", 2, TRANSIENT, NOW)) == [State.FAILED]


def test_too_many_lost_workers_fail_the_node_with_worker_lost() -> None:
    s = scheduler(node("a"))
    s.start()
    for attempt in (1, 2):
        s.node_started("a", attempt, "w", NOW)
        actions = s.node_lost("a", attempt, "crash", max_losses=1, now=NOW)
    failed = [a for a in actions if isinstance(a, NodeChanged) and a.fields.get("status") == State.FAILED]
    assert failed and failed[0].fields["error"].code == "worker_lost"
    assert ended(actions) == [State.FAILED]


def test_a_stale_loss_changes_nothing() -> None:
    s = scheduler(node("a"))
    s.start()
    s.node_started("a", 1, "w1", NOW)
    s.node_lost("a", 1, "crash", max_losses=5, now=NOW)
    assert s.node_lost("a", 1, "crash again", max_losses=5, now=NOW) == []


def test_restore_resends_dispatched_commands_and_dispatches_what_became_ready() -> None:
    from flowkit.states import NodeStatus

    graph = (node("a"), node("b", depends_on=["a"]), node("c"))
    stored = {
        "a": NodeStatus(node_id="a", type="w", status=State.FINISHED, attempts=1),
        "b": NodeStatus(node_id="b", type="w", status=State.QUEUED, attempts=0),
        "c": NodeStatus(node_id="c", type="w", status=State.QUEUED, attempts=1),
    }
    s = scheduler(*graph)
    actions = s.restore(State.RUNNING, stored, NOW)
    assert sorted(dispatched(actions)) == [("b", 1), ("c", 1)]
    assert s.open == 2 and ended(actions) == []


def test_suspend_holds_ready_nodes_and_retries_but_not_a_lost_attempt() -> None:
    s = scheduler(node("a"), node("b", depends_on=["a"]), node("r", retry_policy={"max": 2}), node("l"))
    assert sorted(dispatched(s.start())) == [("a", 1), ("l", 1), ("r", 1)]
    assert TaskSuspended(True) in s.suspend()
    assert s.suspend() == []  # already suspended
    assert dispatched(finish(s, "a")) == []  # b became ready: held
    assert [a for a in fail(s, "r") if isinstance(a, RetryLater)] == [RetryLater("r", 2, 0.0)]
    assert s.retry_due("r", 2) == []  # the retry is due: held too
    s.node_started("l", 1, "w1", NOW)
    assert dispatched(s.node_lost("l", 1, "crash", max_losses=5, now=NOW)) == [("l", 2)]  # had started
    resumed = s.resume()
    assert resumed[0] == TaskSuspended(False)
    assert dispatched(resumed) == [("b", 1), ("r", 2)]  # in the order they became ready
    assert s.resume() == []


def test_a_restored_suspended_task_holds_what_was_ready() -> None:
    from flowkit.states import NodeStatus

    stored = {
        "a": NodeStatus(node_id="a", type="w", status=State.FINISHED, attempts=1),
        "b": NodeStatus(node_id="b", type="w", status=State.QUEUED, attempts=0),
    }
    s = scheduler(node("a"), node("b", depends_on=["a"]))
    assert dispatched(s.restore(State.RUNNING, stored, NOW, suspended=True)) == []
    assert dispatched(s.resume()) == [("b", 1)]


def test_after_a_retry_the_attempts_before_it_are_not_charged_and_not_resent() -> None:
    from flowkit.states import NodeStatus

    # What retry_task stores: `a` failed at attempt 2 of max 2, reopened with attempt_base 2.
    stored = {"a": NodeStatus(node_id="a", type="w", status=State.QUEUED, attempts=2, attempt_base=2)}
    s = scheduler(node("a", retry_policy={"max": 2}))
    assert dispatched(s.restore(State.RUNNING, stored, NOW)) == [("a", 3)]  # a new attempt, not 2 again
    retried = fail(s, "a")
    assert [a for a in retried if isinstance(a, RetryLater)] == [RetryLater("a", 4, 0.0)]
    assert dispatched(s.retry_due("a", 4)) == [("a", 4)]
    assert ended(fail(s, "a")) == [State.FAILED]  # two attempts since the retry: budget spent
