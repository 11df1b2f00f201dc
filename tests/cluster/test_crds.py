"""The FlowTask and FlowWorkerPool CRDs of crds/ on the test cluster's real API server.

The CRDs are cluster-scoped and shared with the operator's tests: they are applied
(identical bytes, so applying twice is a no-op) and never deleted here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .kube import Kubectl

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
PIPELINE = REPO / "examples" / "etl" / "pipeline.yaml"
API = "flowkit.io/v1alpha1"
IMMUTABLE = "spec.graph cannot be changed once the FlowTask exists; create a new FlowTask"

# Graphs of the seed docs, as written there (each must be stored unchanged).
SEED_GRAPHS: dict[str, dict[str, Any]] = {
    "quickstart-edges": {
        "nodes": [
            {"node_id": "extract", "type": "extractor", "depends_on": []},
            {"node_id": "transform", "type": "transformer", "depends_on": ["extract"]},
            {"node_id": "load", "type": "loader", "depends_on": ["transform"]},
        ],
        "edges": [["extract", "transform"], ["transform", "load"]],
    },
    "single-node-empty-edges": {
        "nodes": [
            {"node_id": "process_data", "type": "processor", "io": {"input_inline": {"data": "hello"}}}
        ],
        "edges": [],
    },
    "fan-in-count-streaming-retry-adapters": {
        "nodes": [
            {"node_id": "n1", "type": "a"},
            {"node_id": "n2", "type": "a"},
            {
                "node_id": "combiner",
                "type": "b",
                "depends_on": ["n1", "n2"],
                "fan_in": "count:2",
                "io": {
                    "start_when": "first_batch",
                    "input_inline": {
                        "input_adapter": "pull.from_artifacts",
                        "input_args": {"from_nodes": ["n1"], "poll_ms": 500, "eof_on_task_done": True},
                    },
                },
                "retry_policy": {
                    "max": 3,
                    "backoff_sec": 300,
                    "permanent_on": ["bad_input", "schema_mismatch"],
                },
            },
            {
                "node_id": "merger",
                "type": "coordinator_fn",
                "io": {
                    "fn": "merge.generic",
                    "fn_args": {"from_nodes": ["n1", "n2"], "target": {"key": "merged_result"}},
                },
            },
        ]
    },
    "etl-example": yaml.safe_load(PIPELINE.read_text()),
}


@pytest.fixture(scope="session")
def flowkit_crds(admin_kubectl: Kubectl) -> None:
    """crds/ applied and Established (left installed: other tests use the same CRDs)."""
    admin_kubectl("apply", "-f", str(CRDS))
    admin_kubectl.wait("crd/flowtasks.flowkit.io", "condition=Established", timeout=60)
    admin_kubectl.wait("crd/flowworkerpools.flowkit.io", "condition=Established", timeout=60)


def flowtask(name: str, graph: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "FlowTask",
        "metadata": {"name": name},
        "spec": {"graph": graph, **spec},
    }


def pool(name: str, **spec: Any) -> dict[str, Any]:
    body = {"roles": ["extractor"], "handlers": "examples.etl.handlers:HANDLERS", **spec}
    return {"apiVersion": API, "kind": "FlowWorkerPool", "metadata": {"name": name}, "spec": body}


def refused(kubectl: Kubectl, obj: dict[str, Any]) -> str:
    """`kubectl apply` (its default field validation) must refuse `obj`; its message."""
    proc = kubectl.run("apply", "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0, f"accepted: {json.dumps(obj)}\n{proc.stdout}"
    return proc.stderr


pytestmark = pytest.mark.usefixtures("flowkit_crds")


@pytest.mark.parametrize("name", sorted(SEED_GRAPHS))
def test_every_seed_graph_is_accepted_and_stored_unchanged(kubectl: Kubectl, name: str) -> None:
    kubectl.apply(flowtask(name, SEED_GRAPHS[name], params={"anything": {"goes": [1, "two"]}}))
    stored = kubectl.json(f"ft/{name}")["spec"]
    assert stored["graph"] == SEED_GRAPHS[name]
    assert stored["params"] == {"anything": {"goes": [1, "two"]}}


def test_unknown_fields_inside_io_are_kept_for_the_engine_to_judge(kubectl: Kubectl) -> None:
    graph = {"nodes": [{"node_id": "a", "type": "x", "io": {"future_option": {"k": 1}}}]}
    kubectl.apply(flowtask("io", graph))
    assert kubectl.json("ft/io")["spec"]["graph"] == graph


def test_defaults_of_a_flowtask(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("defaults", {"nodes": [{"node_id": "a", "type": "x"}]}))
    spec = kubectl.json("ft/defaults")["spec"]
    assert (spec["suspend"], spec["retry"]) == (False, 0)


BAD_NODES: dict[str, tuple[dict[str, Any], str]] = {
    "no-node-id": ({"type": "x"}, "spec.graph.nodes[0].node_id: Required value"),
    "no-type": ({"node_id": "a"}, "spec.graph.nodes[0].type: Required value"),
    "fan-in-word": (
        {"node_id": "a", "type": "x", "fan_in": "most"},
        'spec.graph.nodes[0].fan_in: Invalid value: "most"',
    ),
    "fan-in-count-zero": (
        {"node_id": "a", "type": "x", "fan_in": "count:0"},
        'spec.graph.nodes[0].fan_in: Invalid value: "count:0"',
    ),
    "negative-retry-max": (
        {"node_id": "a", "type": "x", "retry_policy": {"max": -1}},
        "spec.graph.nodes[0].retry_policy.max: Invalid value: -1",
    ),
    "zero-retry-max": (
        {"node_id": "a", "type": "x", "retry_policy": {"max": 0}},
        "spec.graph.nodes[0].retry_policy.max: Invalid value: 0",
    ),
    "negative-backoff": (
        {"node_id": "a", "type": "x", "retry_policy": {"max": 2, "backoff_sec": -0.5}},
        "spec.graph.nodes[0].retry_policy.backoff_sec: Invalid value: -0.5",
    ),
    "bad-start-when": (
        {"node_id": "a", "type": "x", "io": {"start_when": "soon"}},
        'spec.graph.nodes[0].io.start_when: Unsupported value: "soon"',
    ),
    "empty-node-id": ({"node_id": "", "type": "x"}, "spec.graph.nodes[0].node_id: Invalid value"),
    "depends-on-a-string": (
        {"node_id": "a", "type": "x", "depends_on": "b"},
        'spec.graph.nodes[0].depends_on: Invalid value: "string"',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NODES))
def test_a_malformed_node_is_refused_naming_the_field(kubectl: Kubectl, case: str) -> None:
    node, message = BAD_NODES[case]
    assert message in refused(kubectl, flowtask("bad", {"nodes": [node]}))


def test_a_fan_in_error_shows_the_accepted_forms(kubectl: Kubectl) -> None:
    message = refused(kubectl, flowtask("bad", {"nodes": [{"node_id": "a", "type": "x", "fan_in": "some"}]}))
    assert "should match '^(all|any|count:[1-9][0-9]*)$'" in message


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("node", "spec.graph.nodes[0].colour"),
        ("retry_policy", "spec.graph.nodes[0].retry_policy.attempts"),
        ("graph", "spec.graph.links"),
        ("spec", "spec.priority"),
    ],
)
def test_an_unknown_field_is_refused_by_kubectl_apply_by_default(
    kubectl: Kubectl, where: str, field: str
) -> None:
    task = flowtask("bad", {"nodes": [{"node_id": "a", "type": "x", "retry_policy": {"max": 2}}]})
    target = {
        "node": task["spec"]["graph"]["nodes"][0],
        "retry_policy": task["spec"]["graph"]["nodes"][0]["retry_policy"],
        "graph": task["spec"]["graph"],
        "spec": task["spec"],
    }[where]
    target[field.rsplit(".", 1)[1]] = "x"
    assert f'unknown field "{field}"' in refused(kubectl, task)


def test_without_strict_validation_an_unknown_field_would_be_dropped_silently(kubectl: Kubectl) -> None:
    # Why the default matters: the schema alone prunes unknown fields; kubectl apply's
    # default (--validate=strict, the server's Strict field validation) turns that into an error.
    task = flowtask("lax", {"nodes": [{"node_id": "a", "type": "x", "colour": "red"}]})
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(task))
    assert kubectl.json("ft/lax")["spec"]["graph"]["nodes"] == [{"node_id": "a", "type": "x"}]


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            {"nodes": []},
            "spec.graph.nodes: Invalid value: 0: spec.graph.nodes in body should have at least 1 items",
        ),
        ({}, "spec.graph.nodes: Required value"),
        ({"nodes": [{"node_id": "a", "type": "x"}], "edges": [["a"]]}, "spec.graph.edges[0]: Invalid value"),
    ],
)
def test_a_malformed_graph_is_refused_naming_the_field(
    kubectl: Kubectl, graph: dict[str, Any], message: str
) -> None:
    assert message in refused(kubectl, flowtask("bad", graph))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"retry": -1}, "spec.retry: Invalid value: -1"),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds: Invalid value: 0"),
        ({"ttlSecondsAfterFinished": -5}, "spec.ttlSecondsAfterFinished: Invalid value: -5"),
        ({"suspend": "yes"}, 'spec.suspend: Invalid value: "string"'),
    ],
)
def test_bad_task_settings_are_refused(kubectl: Kubectl, spec: dict[str, Any], message: str) -> None:
    assert message in refused(kubectl, flowtask("bad", {"nodes": [{"node_id": "a", "type": "x"}]}, **spec))


def test_a_missing_graph_is_refused(kubectl: Kubectl) -> None:
    task = {"apiVersion": API, "kind": "FlowTask", "metadata": {"name": "bad"}, "spec": {"params": {}}}
    assert "spec.graph: Required value" in refused(kubectl, task)


def test_the_graph_of_an_existing_flowtask_cannot_be_changed(kubectl: Kubectl) -> None:
    graph = SEED_GRAPHS["etl-example"]
    kubectl.apply(flowtask("etl", graph))
    changed = copy.deepcopy(graph)
    changed["nodes"][0]["io"]["input_inline"]["orders"] = 480
    assert IMMUTABLE in refused(kubectl, flowtask("etl", changed))
    proc = kubectl.run(
        "patch", "ft/etl", "--type=json", "-p", '[{"op":"remove","path":"/spec/graph/nodes/5"}]', check=False
    )
    assert proc.returncode != 0 and IMMUTABLE in proc.stderr
    assert kubectl.json("ft/etl")["spec"]["graph"] == graph


def test_suspend_retry_and_the_other_settings_can_change(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]))
    kubectl(
        "patch",
        "ft/etl",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true,"retry":1,"ttlSecondsAfterFinished":60}}',
    )
    spec = kubectl.json("ft/etl")["spec"]
    assert (spec["suspend"], spec["retry"], spec["ttlSecondsAfterFinished"]) == (True, 1, 60)


def _patch_status(kubectl: Kubectl, target: str, status: dict[str, Any]) -> None:
    kubectl("patch", target, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def test_kubectl_get_ft_shows_phase_progress_age_and_message(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]))
    message = "node 'load' failed: TimeoutError (attempt 3/3)"
    _patch_status(kubectl, "ft/etl", {"phase": "Failed", "progress": "4/6", "message": message})
    header, row = kubectl("get", "ft").splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "AGE", "MESSAGE"]
    name, phase, progress, _age, *words = row.split()
    assert (name, phase, progress, " ".join(words)) == ("etl", "Failed", "4/6", message)


def test_kubectl_wait_for_condition_succeeded_works_on_a_flowtask(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]))
    condition = {
        "type": "Succeeded",
        "status": "True",
        "reason": "AllNodesFinished",
        "message": "6/6 nodes finished",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {
        "phase": "Succeeded",
        "progress": "6/6",
        "taskId": "abc",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:01:00Z",
        "observedGeneration": 1,
        "observedRetry": 0,
        "conditions": [condition, {**condition, "type": "Failed", "status": "False"}],
        "nodeCounts": {"finished": 6},
        "nodes": {
            "load": {"state": "finished", "attempts": 1, "batches": 12, "startedAt": "2026-01-01T00:00:01Z"}
        },
        "nodesOmitted": 5,
        "detail": "flowkit status abc (MongoDB collection flowkit_tasks)",
    }
    _patch_status(kubectl, "ft/etl", status)
    kubectl.wait("ft/etl", "condition=Succeeded", timeout=10)
    assert kubectl.json("ft/etl")["status"] == status


def test_the_status_refuses_an_unknown_phase_and_keeps_other_fields(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]))
    proc = kubectl.run(
        "patch",
        "ft/etl",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Done"}}',
        check=False,
    )
    assert proc.returncode != 0 and 'status.phase: Unsupported value: "Done"' in proc.stderr
    # kopf keeps its own bookkeeping in the status: it must not be pruned
    _patch_status(kubectl, "ft/etl", {"kopf": {"progress": {"h": 1}}})
    assert kubectl.json("ft/etl")["status"]["kopf"] == {"progress": {"h": 1}}


def test_the_status_subresource_ignores_spec_changes(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]))
    kubectl(
        "patch",
        "ft/etl",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true},"status":{"phase":"Running"}}',
    )
    task = kubectl.json("ft/etl")
    assert (task["spec"]["suspend"], task["status"]["phase"]) == (False, "Running")


def test_short_names_and_category(kubectl: Kubectl) -> None:
    kubectl.apply(flowtask("etl", SEED_GRAPHS["etl-example"]), pool("etl"))
    assert kubectl("get", "ft", "-o", "name").split() == ["flowtask.flowkit.io/etl"]
    assert kubectl("get", "fwp", "-o", "name").split() == ["flowworkerpool.flowkit.io/etl"]
    assert sorted(kubectl("get", "flowkit", "-o", "name").split()) == [
        "flowtask.flowkit.io/etl",
        "flowworkerpool.flowkit.io/etl",
    ]


# --- FlowWorkerPool -------------------------------------------------------------------


def test_a_pool_gets_its_defaults(kubectl: Kubectl) -> None:
    kubectl.apply(pool("etl", autoscaling={}))
    spec = kubectl.json("fwp/etl")["spec"]
    assert (spec["capacity"], spec["minReplicas"], spec["maxReplicas"]) == (4, 1, 10)
    assert spec["autoscaling"] == {"scaleDownCooldownSeconds": 60}


def test_a_full_pool_is_stored_unchanged(kubectl: Kubectl) -> None:
    spec = {
        "roles": ["extractor", "transformer"],
        "handlers": "my_handlers.pipeline:HANDLERS",
        "image": "registry.example/me/flowkit-mine:1",
        "imagePullPolicy": "IfNotPresent",
        "capacity": 2,
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        ],
        "envFrom": [{"secretRef": {"name": "more"}}, {"configMapRef": {"name": "settings"}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "minReplicas": 0,
        "maxReplicas": 5,
        "autoscaling": {"targetRunsPerReplica": 1.5, "scaleDownCooldownSeconds": 30},
    }
    kubectl.apply({"apiVersion": API, "kind": "FlowWorkerPool", "metadata": {"name": "full"}, "spec": spec})
    assert kubectl.json("fwp/full")["spec"] == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"roles": []}, "spec.roles: Invalid value: 0: spec.roles in body should have at least 1 items"),
        ({"roles": None}, "spec.roles: Required value"),
        ({"handlers": None}, "spec.handlers: Required value"),
        ({"handlers": "examples.etl.handlers"}, 'spec.handlers: Invalid value: "examples.etl.handlers"'),
        ({"imagePullPolicy": "Sometimes"}, 'spec.imagePullPolicy: Unsupported value: "Sometimes"'),
        ({"capacity": 0}, "spec.capacity: Invalid value: 0"),
        ({"minReplicas": -1}, "spec.minReplicas: Invalid value: -1"),
        ({"maxReplicas": 0}, "spec.maxReplicas: Invalid value: 0"),
        (
            {"minReplicas": 5, "maxReplicas": 2},
            "spec.minReplicas: Invalid value: spec.minReplicas must not exceed spec.maxReplicas",
        ),
        ({"minReplicas": 11}, "spec.minReplicas must not exceed spec.maxReplicas"),
        ({"env": [{"value": "1"}]}, "spec.env[0].name: Required value"),
        (
            {"autoscaling": {"targetRunsPerReplica": 0}},
            "spec.autoscaling.targetRunsPerReplica: Invalid value: 0",
        ),
        ({"replicas": 3}, 'unknown field "spec.replicas"'),
    ],
)
def test_a_bad_pool_is_refused_naming_the_field(kubectl: Kubectl, spec: dict[str, Any], message: str) -> None:
    obj = pool("bad", **spec)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    assert message in refused(kubectl, obj)


def test_kubectl_get_fwp_shows_roles_desired_ready_and_age(kubectl: Kubectl) -> None:
    kubectl.apply(pool("etl", roles=["extractor", "loader"]))
    _patch_status(kubectl, "fwp/etl", {"desiredReplicas": 2, "readyReplicas": 1, "reason": "Scaling"})
    header, row = kubectl("get", "fwp").splitlines()
    assert header.split() == ["NAME", "ROLES", "DESIRED", "READY", "AGE"]
    assert row.split()[:4] == ["etl", '["extractor","loader"]', "2", "1"]


def test_the_example_manifests_are_accepted(kubectl: Kubectl) -> None:
    folder = REPO / "examples" / "kubernetes"
    for name in ("etl-pool.yaml", "etl-task.yaml", "etl-task-failing.yaml"):
        kubectl("apply", "-f", str(folder / name))
    assert kubectl.json("ft/etl")["spec"]["graph"] == SEED_GRAPHS["etl-example"]
    assert kubectl.json("fwp/etl")["spec"]["roles"] == ["extractor", "transformer", "loader", "rates"]
