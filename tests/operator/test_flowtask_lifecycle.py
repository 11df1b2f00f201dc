"""FlowTasks through the operator in-process, on the test cluster's API server, real Kafka
and FerretDB, with a real `flowkit worker` process running the handlers."""

from __future__ import annotations

import time
from typing import Any

from operator_support import events_of, flowtask, node, reasons, wait_until


def _status(kubectl: Any, name: str) -> dict[str, Any]:
    return dict(kubectl.json("flowtask", name).get("status") or {})


def test_a_valid_flowtask_runs_to_succeeded(kubectl: Any, operator: Any, worker: Any, store: Any) -> None:
    kubectl.apply(
        flowtask(
            "chain",
            [node("a", "quick"), node("b", "quick", ["a"]), node("c", "quick", ["b"])],
            params={"run": "1"},
        )
    )
    kubectl.wait("ft/chain", "condition=Succeeded", timeout=60)  # the real kubectl, as users wait
    obj = kubectl.json("flowtask", "chain")
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "3/3"
    assert status["taskId"] == obj["metadata"]["uid"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["startedAt"] and status["finishedAt"]
    assert status["nodeCounts"] == {"finished": 3}
    assert set(status["nodes"]) == {"a", "b", "c"} and status["nodesOmitted"] == 0
    assert status["nodes"]["a"]["state"] == "finished" and status["nodes"]["a"]["attempts"] == 1
    assert status["detail"].startswith(f"flowkit status {status['taskId']}")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Succeeded": "True", "Failed": "False", "Suspended": "False"}
    stored = store.flowkit_tasks.find_one({"_id": status["taskId"]}) or store.flowkit_tasks.find_one(
        {"task_id": status["taskId"]}
    )
    assert stored is not None, "the task is in MongoDB under the FlowTask's uid"
    told = wait_until(
        lambda: {"Started", "Succeeded"} <= set(reasons(kubectl, "chain")) and reasons(kubectl, "chain"),
        20,
        "Started and Succeeded events",
    )
    assert told.count("Started") == 1
    out = kubectl("get", "ft", "chain")
    assert "Succeeded" in out and "3/3" in out


def test_an_invalid_graph_is_marked_invalid_once(kubectl: Any, operator: Any, worker: Any) -> None:
    kubectl.apply(flowtask("loop", [node("a", "quick", ["b"]), node("b", "quick", ["a"])]))
    status = wait_until(
        lambda: _status(kubectl, "loop").get("phase") == "Invalid" and _status(kubectl, "loop"),
        30,
        "phase Invalid",
    )
    assert status["reason"] == "InvalidGraph"
    assert any("cycle" in p for p in status["invalid"]), status["invalid"]
    assert status["message"].startswith("invalid graph:")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"
    # The operator goes on: a valid FlowTask after it still runs; the invalid one was judged once.
    kubectl.apply(flowtask("fine", [node("a", "quick")]))
    kubectl.wait("ft/fine", "condition=Succeeded", timeout=60)
    wait_until(lambda: "InvalidGraph" in reasons(kubectl, "loop"), 20, "an InvalidGraph event")
    assert reasons(kubectl, "loop").count("InvalidGraph") == 1, "no retry storm"
    assert _status(kubectl, "loop")["phase"] == "Invalid"


def test_a_failed_node_is_named_and_retry_reruns_it(
    kubectl: Any, operator: Any, worker: Any, tmp_path: Any
) -> None:
    gate = tmp_path / "open"
    kubectl.apply(
        flowtask("gated", [node("first", "quick"), node("load", "gate", ["first"], gate=str(gate))])
    )
    kubectl.wait("ft/gated", "condition=Failed", timeout=60)
    status = _status(kubectl, "gated")
    assert status["phase"] == "Failed"
    assert status["message"].startswith("node 'load' failed: GateClosed (attempt 1/1)"), status["message"]
    assert status["progress"] == "1/2"
    wait_until(
        lambda: {"NodeFailed", "Failed"} <= set(reasons(kubectl, "gated")), 20, "NodeFailed and Failed events"
    )
    gate.write_text("open")
    kubectl("patch", "ft", "gated", "--type=merge", "-p", '{"spec": {"retry": 1}}')
    kubectl.wait("ft/gated", "condition=Succeeded", timeout=60)
    status = _status(kubectl, "gated")
    assert status["observedRetry"] == 1 and status["progress"] == "2/2"
    assert status["nodes"]["first"]["attempts"] == 1, "the finished node kept its result"
    assert "Retrying" in reasons(kubectl, "gated")


def test_suspend_holds_new_nodes_and_resume_finishes(kubectl: Any, operator: Any, worker: Any) -> None:
    kubectl.apply(flowtask("pausing", [node("a", "slow", count=6, delay_ms=250), node("b", "quick", ["a"])]))
    wait_until(lambda: _status(kubectl, "pausing").get("phase") == "Running", 30, "phase Running")
    kubectl("patch", "ft", "pausing", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    kubectl.wait("ft/pausing", "condition=Suspended", timeout=30)
    # a finishes (it was running); b does not start while suspended.
    wait_until(
        lambda: _status(kubectl, "pausing").get("nodes", {}).get("a", {}).get("state") == "finished",
        30,
        "node a finished while suspended",
    )
    status = _status(kubectl, "pausing")
    assert status["phase"] == "Suspended" and status["nodes"]["b"]["state"] == "queued"
    kubectl("patch", "ft", "pausing", "--type=merge", "-p", '{"spec": {"suspend": false}}')
    kubectl.wait("ft/pausing", "condition=Succeeded", timeout=60)
    told = reasons(kubectl, "pausing")
    assert "Suspended" in told and "Resumed" in told


def test_active_deadline_cancels_and_fails(kubectl: Any, operator: Any, worker: Any) -> None:
    kubectl.apply(flowtask("late", [node("a", "slow", count=100, delay_ms=200)], activeDeadlineSeconds=2))
    kubectl.wait("ft/late", "condition=Failed", timeout=60)
    status = _status(kubectl, "late")
    assert status["phase"] == "Failed" and status["reason"] == "DeadlineExceeded", status
    wait_until(lambda: "DeadlineExceeded" in reasons(kubectl, "late"), 20, "a DeadlineExceeded event")


def test_ttl_deletes_a_finished_flowtask_and_its_task(
    kubectl: Any, operator: Any, worker: Any, store: Any
) -> None:
    kubectl.apply(flowtask("shortlived", [node("a", "quick")], ttlSecondsAfterFinished=1))
    uid = kubectl.json("flowtask", "shortlived")["metadata"]["uid"]
    wait_until(
        lambda: kubectl.run("get", "ft", "shortlived", check=False).returncode != 0,
        60,
        "the FlowTask deleted",
    )
    wait_until(
        lambda: store.flowkit_tasks.count_documents({"_id": uid}) == 0, 30, "the task deleted from MongoDB"
    )


def test_deleting_a_running_flowtask_cancels_and_deletes_its_task(
    kubectl: Any, operator: Any, worker: Any, store: Any
) -> None:
    kubectl.apply(flowtask("doomed", [node("a", "slow", count=200, delay_ms=100)]))
    wait_until(lambda: _status(kubectl, "doomed").get("phase") == "Running", 30, "phase Running")
    uid = kubectl.json("flowtask", "doomed")["metadata"]["uid"]
    assert store.flowkit_tasks.count_documents({"_id": uid}) == 1
    kubectl("delete", "ft", "doomed", "--timeout=20s")  # no finalizer: gone at once
    wait_until(
        lambda: store.flowkit_tasks.count_documents({"_id": uid}) == 0, 30, "the task deleted from MongoDB"
    )


def test_restart_mid_task_neither_duplicates_nor_loses_it(
    kubectl: Any, make_operator: Any, worker: Any, store: Any
) -> None:
    first = make_operator()
    kubectl.apply(flowtask("steady", [node("a", "slow", count=10, delay_ms=300), node("b", "quick", ["a"])]))
    wait_until(lambda: _status(kubectl, "steady").get("phase") == "Running", 30, "phase Running")
    first.stop()
    make_operator()
    kubectl.wait("ft/steady", "condition=Succeeded", timeout=90)
    assert store.flowkit_tasks.count_documents({}) == 1, "one task, not a second one"
    assert reasons(kubectl, "steady").count("Started") == 1


def test_deleted_while_the_operator_is_down_is_swept(
    kubectl: Any, make_operator: Any, worker: Any, store: Any
) -> None:
    first = make_operator()
    kubectl.apply(flowtask("orphan", [node("a", "slow", count=200, delay_ms=100)]))
    wait_until(lambda: _status(kubectl, "orphan").get("phase") == "Running", 30, "phase Running")
    uid = kubectl.json("flowtask", "orphan")["metadata"]["uid"]
    first.stop()
    kubectl("delete", "ft", "orphan", "--timeout=20s")  # never hangs while the operator is down
    assert store.flowkit_tasks.count_documents({"_id": uid}) == 1
    make_operator()
    wait_until(
        lambda: store.flowkit_tasks.count_documents({"_id": uid}) == 0, 30, "the sweep deleting the task"
    )


def test_status_of_a_wide_graph_stays_bounded_and_debounced(kubectl: Any, operator: Any, worker: Any) -> None:
    nodes = [node("root", "quick")] + [node(f"n{i:03d}", "quick", ["root"]) for i in range(60)]
    started = time.monotonic()
    kubectl.apply(flowtask("wide", nodes))
    kubectl.wait("ft/wide", "condition=Succeeded", timeout=120)
    took = time.monotonic() - started
    status = _status(kubectl, "wide")
    assert status["progress"] == "61/61"
    assert len(status["nodes"]) == 50 and status["nodesOmitted"] == 11
    assert sum(status["nodeCounts"].values()) == 61
    patches = operator.call(lambda parts: parts.mirror.patches)
    # At most one patch per interval (0.5 s here), however many node changes: ~180 for this graph.
    assert patches <= took / operator.cfg.status_interval_sec + 3, f"{patches} status patches in {took:.1f}s"


def test_graph_is_immutable(kubectl: Any, operator: Any, worker: Any) -> None:
    kubectl.apply(flowtask("fixed", [node("a", "quick")]))
    kubectl.wait("ft/fixed", "condition=Succeeded", timeout=60)
    refused = kubectl.run(
        "patch",
        "ft",
        "fixed",
        "--type=merge",
        "-p",
        '{"spec": {"graph": {"nodes": [{"node_id": "z", "type": "quick"}]}}}',
        check=False,
    )
    assert refused.returncode != 0 and "cannot be changed" in refused.stderr
    # Defensive path (the CRD's rule let a change through): an Event and a message, nothing else.
    body = kubectl.json("flowtask", "fixed")
    operator.call(lambda parts: parts.flowtasks.graph_changed(body))
    wait_until(lambda: "GraphImmutable" in reasons(kubectl, "fixed"), 20, "a GraphImmutable event")
    status = _status(kubectl, "fixed")
    assert "cannot be changed" in status["message"] and status["phase"] == "Succeeded"
    assert events_of(kubectl, "fixed")
