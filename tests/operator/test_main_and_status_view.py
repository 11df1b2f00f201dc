"""`flowkit-operator` as a process (settings from the environment, clean SIGTERM) and the
pure status mapping (bounded nodes, phases, merge patches)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from flowkit_operator.status_mirror import _merge_patch
from flowkit_operator.status_view import Facts, bounded_nodes, task_status
from operator_support import wait_until

from flowkit.states import NodeError, NodeStatus, State, TaskStatus

OPERATOR = str(Path(sys.executable).with_name("flowkit-operator"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_settings_are_one_line_and_exit_2() -> None:
    env = {**os.environ, "FLOWKIT_OPERATOR_HEALTH_PORT": "not-a-port"}
    proc = subprocess.run([OPERATOR], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "FLOWKIT_OPERATOR_HEALTH_PORT" in proc.stderr


def test_the_process_serves_probes_and_stops_cleanly_on_sigterm(
    crds: None,
    kafka_bootstrap: str,
    kafka_topic_prefix: str,
    store_url: str,
    namespace: str,
    cluster_env: Any,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "KUBECONFIG": cluster_env["KUBECONFIG"],
        "FLOWKIT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWKIT_MONGO_URL": store_url,
        "FLOWKIT_TOPIC_PREFIX": kafka_topic_prefix,
        "FLOWKIT_OPERATOR_NAMESPACES": namespace,
        "FLOWKIT_OPERATOR_HEALTH_PORT": str(port),
        "FLOWKIT_OPERATOR_HEALTH_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen([OPERATOR], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as rsp:
                    return rsp.status == 200
            except OSError:
                return proc.poll() is not None

        wait_until(ready, 60, "/readyz answering 200")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "operator stopped" in out


def _task(states: list[State]) -> TaskStatus:
    nodes = {}
    for i, state in enumerate(states):
        error = NodeError(code="Boom", message="it broke") if state == State.FAILED else None
        nodes[f"n{i:03d}"] = NodeStatus(node_id=f"n{i:03d}", type="x", status=state, attempts=1, error=error)
    return TaskStatus(task_id="t1", status=State.RUNNING, nodes=nodes, created_at=1_700_000_000.0)


def test_bounded_nodes_keep_failed_and_running_first() -> None:
    states = [State.FINISHED] * 100 + [State.RUNNING] * 3 + [State.FAILED] * 2 + [State.QUEUED] * 10
    kept, omitted = bounded_nodes(_task(states))
    assert len(kept) == 50 and omitted == 65
    ordered = list(kept.values())
    assert [n["state"] for n in ordered[:5]] == ["failed", "failed", "running", "running", "running"]
    assert all(n["state"] == "queued" for n in ordered[5:15])


def test_status_of_a_failed_task_names_node_code_and_attempt() -> None:
    task = _task([State.FINISHED, State.FAILED])
    task.status = State.FAILED
    status = task_status(task, Facts(max_attempts={"n001": 3}), None, 1_700_000_100.0)
    assert status["phase"] == "Failed" and status["progress"] == "1/2"
    assert status["message"] == "node 'n001' failed: Boom (attempt 1/3): it broke"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"


def test_merge_patch_removes_what_went_away() -> None:
    old = {
        "nodeCounts": {"queued": 2, "finished": 1},
        "nodes": {"a": {"state": "running"}, "b": {"error": "x"}},
    }
    new = {"nodeCounts": {"finished": 3}, "nodes": {"b": {"state": "finished"}}}
    assert _merge_patch(new, old) == {
        "nodeCounts": {"finished": 3, "queued": None},
        "nodes": {"b": {"state": "finished", "error": None}, "a": None},
    }
