"""Graph rules: every invalid graph is rejected with node, field and code; seed graphs pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowkit import GraphError, load_graph_file, validate_graph
from flowkit.coordinator.functions import FUNCTIONS, coordinator_function
from flowkit.graph import graph_document


def node(node_id: str, type: str = "worker", **fields: Any) -> dict[str, Any]:
    return {"node_id": node_id, "type": type, **fields}


def adapter_io(adapter: str, **args: Any) -> dict[str, Any]:
    return {"input_inline": {"input_adapter": adapter, "input_args": args}}


def rejected(graph: dict[str, Any], **kwargs: Any) -> GraphError:
    with pytest.raises(GraphError) as info:
        validate_graph(graph, **kwargs)
    return info.value


def codes(error: GraphError) -> list[tuple[str | None, str, str]]:
    return [(p.node_id, p.field, p.code) for p in error.problems]


# --- structure -------------------------------------------------------------------


def test_cycle_is_rejected_naming_its_nodes_in_order() -> None:
    graph = {
        "nodes": [
            node("a", depends_on=["c"]),
            node("b", depends_on=["a"]),
            node("c", depends_on=["b"]),
            node("outside"),
        ]
    }
    error = rejected(graph)
    assert codes(error) == [("a", "depends_on", "cycle")]
    assert "a -> b -> c -> a" in str(error)
    assert "outside" not in error.first.message


def test_cycle_is_found_from_a_node_downstream_of_it() -> None:
    graph = {
        "nodes": [
            node("a_downstream", depends_on=["y"]),
            node("x", depends_on=["y"]),
            node("y", depends_on=["x"]),
        ]
    }
    error = rejected(graph)
    assert error.code == "cycle"
    assert "x -> y -> x" in error.first.message or "y -> x -> y" in error.first.message
    assert "a_downstream" not in error.first.message


def test_unknown_dependency_is_rejected() -> None:
    error = rejected({"nodes": [node("a", depends_on=["ghost"])]})
    assert codes(error) == [("a", "depends_on", "unknown_dependency")]
    assert "ghost" in str(error)


def test_self_dependency_is_rejected() -> None:
    error = rejected({"nodes": [node("a", depends_on=["a"])]})
    assert codes(error) == [("a", "depends_on", "self_dependency")]


def test_duplicate_node_id_is_rejected() -> None:
    error = rejected({"nodes": [node("a"), node("b"), node("a")]})
    assert codes(error) == [("a", "node_id", "duplicate_id")]


@pytest.mark.parametrize("fan_in", ["count:0", "count:3"])
def test_fan_in_count_out_of_range_is_rejected(fan_in: str) -> None:
    graph = {"nodes": [node("a"), node("b"), node("c", depends_on=["a", "b"], fan_in=fan_in)]}
    error = rejected(graph)
    assert codes(error) == [("c", "fan_in", "bad_fan_in")]
    assert fan_in in str(error)
    assert "1..2" in str(error)


@pytest.mark.parametrize("fan_in", ["most", "count:", "count:two", "count:-1", "ANY", 2])
def test_malformed_fan_in_is_rejected(fan_in: Any) -> None:
    graph = {"nodes": [node("a"), node("b", depends_on=["a"], fan_in=fan_in)]}
    error = rejected(graph)
    assert codes(error) == [("b", "fan_in", "bad_fan_in")]


def test_unknown_node_field_is_rejected_by_name() -> None:
    error = rejected({"nodes": [node("a"), node("b", depend_on=["a"])]})
    assert codes(error) == [("b", "depend_on", "unknown_field")]


def test_unknown_io_field_is_rejected_by_its_path() -> None:
    error = rejected({"nodes": [node("a", io={"start_wen": "first_batch"})]})
    assert codes(error) == [("a", "io.start_wen", "unknown_field")]


def test_bad_start_when_is_rejected() -> None:
    error = rejected({"nodes": [node("a", io={"start_when": "soon"})]})
    assert codes(error) == [("a", "io.start_when", "bad_value")]


def test_unknown_graph_field_is_rejected() -> None:
    error = rejected({"nodes": [node("a")], "edgez": []})
    assert codes(error) == [(None, "edgez", "unknown_field")]


def test_graph_fields_that_are_not_strings_are_rejected_by_name() -> None:
    error = rejected({"nodes": [node("a")], 1: "x", "colour": "red"})  # YAML gives int keys
    assert codes(error) == [(None, "1, colour", "unknown_field")]


@pytest.mark.parametrize("graph", [{"nodes": []}, {}, {"nodes": "a"}])
def test_empty_graph_is_rejected(graph: dict[str, Any]) -> None:
    error = rejected(graph)
    assert codes(error) == [(None, "nodes", "no_nodes")]


def test_graph_over_max_nodes_is_rejected() -> None:
    error = rejected({"nodes": [node(f"n{i}") for i in range(4)]}, max_nodes=3)
    assert codes(error) == [(None, "nodes", "too_large")]
    assert "4 nodes" in str(error) and "3" in str(error)


def test_several_problems_are_reported_at_once() -> None:
    graph = {
        "nodes": [
            node("a", depends_on=["ghost"]),
            node("b", depends_on=["a"], fan_in="count:5"),
            node("c", depends_on=["c"]),
            node("d", colour="red"),
        ]
    }
    error = rejected(graph)
    assert set(codes(error)) == {
        ("a", "depends_on", "unknown_dependency"),
        ("b", "fan_in", "bad_fan_in"),
        ("c", "depends_on", "self_dependency"),
        ("d", "colour", "unknown_field"),
    }
    assert "4 problems" in str(error)


# --- roles -------------------------------------------------------------------------


def test_role_no_handler_serves_is_rejected() -> None:
    graph = {"nodes": [node("a", type="extractor"), node("b", type="loader", depends_on=["a"])]}
    error = rejected(graph, roles=["extractor"])
    assert codes(error) == [("b", "type", "unknown_role")]
    assert "loader" in str(error)


def test_coordinator_fn_needs_no_role() -> None:
    graph = {
        "nodes": [
            node("a", type="extractor"),
            node("m", type="coordinator_fn", depends_on=["a"], io={"fn": "metrics.aggregate"}),
        ]
    }
    assert len(validate_graph(graph, roles=["extractor"]).nodes) == 2


# --- input adapters ------------------------------------------------------------------


def test_unknown_adapter_is_bad_input_adapter() -> None:
    graph = {"nodes": [node("a"), node("b", depends_on=["a"], io=adapter_io("pull.from_nowhere"))]}
    error = rejected(graph)
    assert codes(error) == [("b", "io.input_inline.input_adapter", "bad_input_adapter")]
    assert "pull.from_nowhere" in str(error)


def test_missing_from_nodes_is_bad_input_args() -> None:
    graph = {"nodes": [node("a"), node("b", depends_on=["a"], io=adapter_io("pull.from_artifacts"))]}
    error = rejected(graph)
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]
    assert "from_nodes" in str(error)


def test_negative_rechunk_size_is_bad_input_args() -> None:
    io = adapter_io("pull.from_artifacts.rechunk:size", from_nodes=["a"], size=-3)
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]
    assert "size" in str(error) and "-3" in str(error)


def test_missing_rechunk_size_is_bad_input_args() -> None:
    io = adapter_io("pull.from_artifacts.rechunk:size", from_nodes=["a"])
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]
    assert "size is required" in str(error)


def test_unknown_adapter_arg_is_bad_input_args() -> None:
    io = adapter_io("pull.from_artifacts", from_nodes=["a"], colour="red")
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]
    assert "colour" in str(error)


def test_input_args_that_are_not_a_mapping_are_bad_input_args() -> None:
    io = {"input_inline": {"input_adapter": "pull.from_artifacts", "input_args": ["a"]}}
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]


def test_from_nodes_not_upstream_is_bad_input_args() -> None:
    io = adapter_io("pull.from_artifacts", from_nodes=["side"])
    graph = {"nodes": [node("a"), node("side"), node("b", depends_on=["a"], io=io)]}
    error = rejected(graph)
    assert codes(error) == [("b", "io.input_inline.input_args.from_nodes", "bad_input_args")]
    assert "'side' is not upstream" in str(error)


def test_from_nodes_naming_unknown_node_is_rejected() -> None:
    io = adapter_io("pull.from_artifacts", from_nodes=["ghost"])
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert ("b", "io.input_inline.input_args.from_nodes", "bad_input_args") in codes(error)
    assert "ghost" in str(error)


def test_from_node_alias_is_accepted_and_infers_the_dependency() -> None:
    io = adapter_io("pull.from_artifacts", from_node="a")
    spec = validate_graph({"nodes": [node("a"), node("b", io=io)]})
    assert spec.node("b").depends_on == ("a",)


def test_from_node_and_from_nodes_together_are_bad_input_args() -> None:
    io = adapter_io("pull.from_artifacts", from_node="a", from_nodes=["a"])
    error = rejected({"nodes": [node("a"), node("b", depends_on=["a"], io=io)]})
    assert codes(error) == [("b", "io.input_inline.input_args", "bad_input_args")]


# --- coordinator functions -------------------------------------------------------------


def test_unknown_coordinator_function_is_rejected() -> None:
    graph = {"nodes": [node("a"), node("m", type="coordinator_fn", depends_on=["a"], io={"fn": "nope.fn"})]}
    error = rejected(graph)
    assert codes(error) == [("m", "io.fn", "unknown_fn")]
    assert "nope.fn" in str(error) and "merge.generic" in str(error)


def test_coordinator_fn_without_fn_is_rejected() -> None:
    error = rejected({"nodes": [node("a"), node("m", type="coordinator_fn", depends_on=["a"])]})
    assert codes(error) == [("m", "io.fn", "missing_fn")]


@pytest.mark.parametrize(
    "fn_args",
    [{"from_nodes": ["a"], "colour": 1}, {"from_nodes": ["a"], "target": {"key": ""}}, {"from_nodes": "a"}],
)
def test_bad_fn_args_are_rejected(fn_args: dict[str, Any]) -> None:
    io = {"fn": "merge.generic", "fn_args": fn_args}
    graph = {"nodes": [node("a"), node("m", type="coordinator_fn", depends_on=["a"], io=io)]}
    error = rejected(graph)
    assert codes(error) == [("m", "io.fn_args", "bad_fn_args")]


def test_fn_on_a_worker_node_is_rejected() -> None:
    error = rejected({"nodes": [node("a", io={"fn": "merge.generic"})]})
    assert codes(error) == [("a", "io.fn", "fn_on_worker_node")]


def test_user_function_without_args_model_is_accepted() -> None:
    @coordinator_function("test.graph_validation.noop")
    async def noop(ctx: Any, args: dict[str, Any]) -> None:
        return None

    try:
        graph = {"nodes": [node("m", type="coordinator_fn", io={"fn": "test.graph_validation.noop"})]}
        assert validate_graph(graph).node("m").io.fn == "test.graph_validation.noop"
    finally:
        FUNCTIONS.pop("test.graph_validation.noop")


# --- edges ---------------------------------------------------------------------------


def test_edges_contradicting_depends_on_are_rejected() -> None:
    graph = {
        "nodes": [node("a"), node("b", depends_on=["a"]), node("c", depends_on=["a"])],
        "edges": [["a", "b"], ["b", "c"]],
    }
    error = rejected(graph)
    assert {p.node_id for p in error.problems} == {"c"}
    assert {p.code for p in error.problems} == {"edges_disagree"}
    assert error.field == "depends_on"


def test_edge_naming_unknown_node_is_rejected() -> None:
    error = rejected({"nodes": [node("a"), node("b")], "edges": [["a", "ghost"]]})
    assert codes(error) == [(None, "edges", "unknown_node")]
    assert "ghost" in str(error)


def test_malformed_edge_is_rejected() -> None:
    error = rejected({"nodes": [node("a"), node("b")], "edges": [["a", "b", "c"]]})
    assert codes(error) == [(None, "edges[0]", "bad_edge")]


def test_edges_alone_give_dependencies() -> None:
    spec = validate_graph({"nodes": [node("a"), node("b")], "edges": [["a", "b"]]})
    assert spec.node("b").depends_on == ("a",)


# --- seed graphs -----------------------------------------------------------------------


def test_concepts_example_with_edges_is_accepted() -> None:
    graph = {
        "nodes": [
            {"node_id": "extract", "type": "extractor", "depends_on": []},
            {"node_id": "transform", "type": "transformer", "depends_on": ["extract"]},
            {"node_id": "load", "type": "loader", "depends_on": ["transform"]},
        ],
        "edges": [["extract", "transform"], ["transform", "load"]],
    }
    spec = validate_graph(graph, roles=["extractor", "transformer", "loader"])
    assert [n.node_id for n in spec.nodes] == ["extract", "transform", "load"]
    assert spec.node("load").depends_on == ("transform",)


def test_quick_example_with_empty_edges_is_accepted() -> None:
    graph = {
        "nodes": [
            {"node_id": "process_data", "type": "processor", "io": {"input_inline": {"data": "hello world"}}}
        ],
        "edges": [],
    }
    spec = validate_graph(graph, roles=["processor"])
    assert spec.node("process_data").io.input_inline == {"data": "hello world"}


def test_coordinator_fn_example_with_only_io_infers_dependencies() -> None:
    graph = {
        "nodes": [
            node("node1"),
            node("node2"),
            {
                "node_id": "merger",
                "type": "coordinator_fn",
                "io": {
                    "fn": "merge.generic",
                    "fn_args": {"from_nodes": ["node1", "node2"], "target": {"key": "merged_result"}},
                },
            },
        ]
    }
    spec = validate_graph(graph)
    assert spec.node("merger").depends_on == ("node1", "node2")
    assert [n.node_id for n in spec.nodes][-1] == "merger"


def test_seed_retry_policy_and_fan_in_are_accepted() -> None:
    graph = {
        "nodes": [
            node("node1"),
            node("node2"),
            node("node3"),
            node("combiner", depends_on=["node1", "node2", "node3"], fan_in="count:2"),
            {
                "node_id": "flaky_task",
                "type": "worker",
                "retry_policy": {
                    "max": 3,
                    "backoff_sec": 300,
                    "permanent_on": ["bad_input", "schema_mismatch"],
                },
            },
        ]
    }
    spec = validate_graph(graph)
    assert spec.node("combiner").fan_in_rule.count == 2
    assert spec.node("flaky_task").retry_policy.permanent_on == ("bad_input", "schema_mismatch")


@pytest.mark.parametrize(
    "graph",
    [
        load_graph_file(Path(__file__).resolve().parents[2] / "examples" / "etl" / "pipeline.yaml"),
        {
            "nodes": [
                {"node_id": "a", "type": "x", "retry_policy": {"max": 3, "backoff_sec": 0}},
                {
                    "node_id": "b",
                    "type": "y",
                    "depends_on": ["a"],
                    "io": {
                        "start_when": "first_batch",
                        "input_inline": {
                            "input_adapter": "pull.from_artifacts",
                            "input_args": {"from_nodes": ["a"]},
                        },
                    },
                },
                {"node_id": "c", "type": "x", "depends_on": ["a", "b"], "fan_in": "count:1"},
            ]
        },
    ],
    ids=["examples-etl", "streaming-and-fan-in"],
)
def test_the_stored_graph_document_validates_back_to_the_same_graph(graph: dict[str, Any]) -> None:
    spec = validate_graph(graph)
    document = graph_document(spec)
    assert validate_graph(json.loads(json.dumps(document))) == spec
    assert len(json.dumps(document)) < len(json.dumps(spec.model_dump(mode="json")))
