"""FlowTasks on the shared installation (the README's, by address): failure, invalid
manifests and graphs, suspend/resume, deletion, retry — each as a user sees it through
kubectl, with the store or the pods' logs as the second witness."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .release import Release, example, flowtask

RUNNING_OR_DONE = ("running", "finished")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def slow_extract(node_id: str = "extract", pages: int = 40, **fields: Any) -> dict[str, Any]:
    """An extractor node of the ETL example taking ~0.15 s a page."""
    return {
        "node_id": node_id,
        "type": "extractor",
        "io": {"input_inline": {"orders": pages * 10, "page_size": 10}},
        **fields,
    }


def node_state(status: dict[str, Any], node_id: str) -> str | None:
    node: dict[str, Any] = (status.get("nodes") or {}).get(node_id) or {}
    return node.get("state")


def test_a_failing_flowtask_shows_failed_naming_the_node_and_its_error_code(readme_release: Release) -> None:
    manifest = example("etl-task-failing.yaml")
    name = manifest["metadata"]["name"] = unique("etl-failing")
    proc = readme_release.apply(manifest)
    assert proc.returncode == 0, proc.stderr
    readme_release.kubectl.wait(f"ft/{name}", "condition=Failed", timeout=180)
    status = readme_release.status(name)
    assert status["phase"] == "Failed"
    assert "fetch_rates" in status["message"] and "bad_currency" in status["message"], status["message"]
    assert node_state(status, "fetch_rates") == "failed"
    assert node_state(status, "extract") == "finished"
    # The printer column shows it too.
    row = readme_release.kubectl("get", "ft", name, "--no-headers")
    assert "Failed" in row and "fetch_rates" in row, row


def test_a_malformed_flowtask_is_refused_by_kubectl_apply_naming_the_field(readme_release: Release) -> None:
    manifest = flowtask(
        unique("bad-fan-in"),
        [{"node_id": "a", "type": "extractor"}, {"node_id": "b", "type": "loader", "fan_in": "some"}],
    )
    proc = readme_release.apply(manifest)
    assert proc.returncode != 0
    assert "spec.graph.nodes[1].fan_in" in proc.stderr, proc.stderr
    missing = readme_release.kubectl.run("get", "ft", manifest["metadata"]["name"], check=False)
    assert missing.returncode != 0  # nothing was stored


def test_a_graph_the_schema_cannot_judge_shows_invalid_with_the_engines_reasons(
    readme_release: Release,
) -> None:
    name = unique("cycle")
    nodes = [
        {"node_id": "a", "type": "extractor", "depends_on": ["b"]},
        {"node_id": "b", "type": "extractor", "depends_on": ["a"]},
        {"node_id": "c", "type": "loader", "depends_on": ["nowhere"]},
    ]
    proc = readme_release.apply(flowtask(name, nodes))
    assert proc.returncode == 0, proc.stderr  # well-formed: only the whole graph is wrong
    status = readme_release.wait_phase(name, "Invalid", timeout=60)
    problems = " ".join(status["invalid"]).lower()
    assert "cycle" in problems, status["invalid"]
    assert "nowhere" in problems, status["invalid"]
    assert not status.get("taskId"), "an invalid graph must not become a task"


def test_suspend_holds_new_nodes_back_and_resume_finishes_the_task(readme_release: Release) -> None:
    name = unique("suspend")
    nodes = [slow_extract(pages=30), slow_extract("after", pages=1, depends_on=["extract"])]
    assert readme_release.apply(flowtask(name, nodes)).returncode == 0
    readme_release.wait_status(name, "extract running", lambda s: node_state(s, "extract") == "running")
    readme_release.patch_spec(name, {"suspend": True})
    readme_release.wait_phase(name, "Suspended", timeout=60)
    # The running node finishes; the one after it is held back.
    status = readme_release.wait_status(
        name, "extract finished", lambda s: node_state(s, "extract") == "finished", timeout=60
    )
    assert node_state(status, "after") not in RUNNING_OR_DONE, status
    held_until = time.monotonic() + 3  # an unsuspended task starts `after` within a second
    while time.monotonic() < held_until:
        status = readme_release.status(name)
        assert node_state(status, "after") not in RUNNING_OR_DONE, (
            f"`after` started while suspended: {status}"
        )
        assert status["phase"] == "Suspended", status
        time.sleep(0.5)
    readme_release.patch_spec(name, {"suspend": False})
    readme_release.kubectl.wait(f"ft/{name}", "condition=Succeeded", timeout=120)
    status = readme_release.status(name)
    assert status["progress"] == "2/2"
    assert status["nodes"]["after"]["startedAt"] >= status["nodes"]["extract"]["finishedAt"]


def test_deleting_a_running_flowtask_cancels_its_task(readme_release: Release) -> None:
    name = unique("delete")
    nodes = [slow_extract(pages=200), slow_extract("after", pages=1, depends_on=["extract"])]
    assert readme_release.apply(flowtask(name, nodes)).returncode == 0
    status = readme_release.wait_status(
        name, "extract running", lambda s: node_state(s, "extract") == "running"
    )
    task_id = status["taskId"]
    assert readme_release.store_task(task_id) is not None
    readme_release.kubectl("delete", "ft", name, "--wait=true", "--timeout=30s")
    # The store sees the task cancelled (the 30 s extract never finishes), then removed.
    seen: list[tuple[str | None, str | None]] = []
    deadline = time.monotonic() + 60
    while (doc := readme_release.store_task(task_id)) is not None:
        seen.append((doc.get("status"), ((doc.get("nodes") or {}).get("extract") or {}).get("state")))
        assert time.monotonic() < deadline, f"task {task_id} still in the store: {seen[-5:]}"
        time.sleep(0.2)
    assert all(extract != "finished" for _, extract in seen), seen
    logs = readme_release.kubectl("logs", "-l", "app.kubernetes.io/component=operator", "--tail=-1")
    assert f"task {task_id} cancelled and deleted with its FlowTask" in logs, logs[-2000:]


def test_retry_re_runs_only_the_failed_nodes(readme_release: Release) -> None:
    name = unique("retry")
    nodes = [
        {"node_id": "extract", "type": "extractor", "io": {"input_inline": {"orders": 12, "page_size": 12}}},
        {  # times out on attempt 1 (simulated) and may not retry: the task fails
            "node_id": "fetch_rates",
            "type": "rates",
            "retry_policy": {"max": 1},
            "io": {"input_inline": {"currencies": ["USD"]}},
        },
        {
            "node_id": "report",
            "type": "coordinator_fn",
            "depends_on": ["extract", "fetch_rates"],
            "io": {
                "fn": "merge.generic",
                "fn_args": {"from_nodes": ["extract", "fetch_rates"], "target": {"key": "report"}},
            },
        },
    ]
    assert readme_release.apply(flowtask(name, nodes)).returncode == 0
    failed = readme_release.wait_phase(name, "Failed", timeout=120)
    assert "fetch_rates" in failed["message"], failed["message"]
    assert node_state(failed, "extract") == "finished"
    extract_before = failed["nodes"]["extract"]
    readme_release.patch_spec(name, {"retry": 1})
    readme_release.kubectl.wait(f"ft/{name}", "condition=Succeeded", timeout=120)
    status = readme_release.status(name)
    assert status["observedRetry"] == 1
    assert status["progress"] == "3/3"
    assert status["nodes"]["extract"] == extract_before  # not run again: same attempt, same times
    assert status["nodes"]["fetch_rates"]["attempts"] == 2
    assert status["nodes"]["report"]["state"] == "finished"
