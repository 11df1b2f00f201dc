"""The registries graph validation checks against: known without the worker or the coordinator,
and kept in step with the implementations those register."""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import flowkit
from flowkit import GraphError, validate_graph
from flowkit.coordinator.functions import FUNCTIONS, check_function_args, coordinator_function
from flowkit.graph_registry import (
    COORDINATOR_FUNCTIONS,
    INPUT_ADAPTERS,
    ArgsRegistry,
    FromArtifactsArgs,
    FromNodesArgs,
    RechunkArgs,
)
from flowkit.worker.adapters import ADAPTERS, check_adapter_args, pull

PACKAGE_DIR = Path(flowkit.__file__).parent
GRAPH_MODEL_FILES = ["graph.py", "graph_registry.py"]

BUILTINS_GRAPH = {
    "nodes": [
        {"node_id": "a", "type": "w"},
        {
            "node_id": "b",
            "type": "w",
            "io": {
                "input_inline": {
                    "input_adapter": "pull.from_artifacts.rechunk:size",
                    "input_args": {"from_nodes": ["a"], "size": 2},
                }
            },
        },
        {
            "node_id": "m",
            "type": "coordinator_fn",
            "io": {"fn": "merge.generic", "fn_args": {"from_node": "b"}},
        },
        {"node_id": "t", "type": "coordinator_fn", "depends_on": ["m"], "io": {"fn": "metrics.aggregate"}},
    ]
}


def imported_modules(source: Path) -> set[str]:
    """Every module a file imports, relative ones resolved against the flowkit package."""
    found: set[str] = set()
    for stmt in ast.walk(ast.parse(source.read_text())):
        if isinstance(stmt, ast.Import):
            found.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            base = "flowkit" if stmt.level else ""  # the graph model sits at the package root
            found.add(".".join(p for p in (base, stmt.module or "") if p))
    return found


@pytest.mark.parametrize("name", GRAPH_MODEL_FILES)
def test_graph_model_imports_neither_the_coordinator_nor_the_worker(name: str) -> None:
    modules = imported_modules(PACKAGE_DIR / name)
    assert not {m for m in modules if m.startswith(("flowkit.coordinator", "flowkit.worker"))}


@pytest.fixture
def graph_model_alone() -> Iterator[types.ModuleType]:
    """``flowkit.graph`` loaded as a fresh copy whose package ``__init__`` never runs.

    (The real ``flowkit/__init__.py`` imports the coordinator and the worker, which would
    register everything and hide a graph model that depends on them.)
    """
    package = types.ModuleType("_flowkit_graph_alone")
    package.__path__ = [str(PACKAGE_DIR)]
    sys.modules[package.__name__] = package
    try:
        yield importlib.import_module(f"{package.__name__}.graph")
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == package.__name__]:
            del sys.modules[name]


def test_builtins_are_known_with_only_the_graph_model_imported(graph_model_alone: types.ModuleType) -> None:
    spec = graph_model_alone.validate_graph(BUILTINS_GRAPH)
    assert [n.node_id for n in spec.nodes] == ["a", "b", "m", "t"]
    loaded = {
        n.removeprefix("_flowkit_graph_alone.") for n in sys.modules if n.startswith("_flowkit_graph_alone.")
    }
    assert loaded == {"errors", "graph", "graph_registry"}


def test_graph_model_alone_still_rejects_unknown_names(graph_model_alone: types.ModuleType) -> None:
    graph = {"nodes": [{"node_id": "m", "type": "coordinator_fn", "io": {"fn": "nope.fn"}}]}
    with pytest.raises(graph_model_alone.GraphError) as info:
        graph_model_alone.validate_graph(graph)
    assert info.value.code == "unknown_fn"


# --- the implementations and the registries agree ----------------------------------------


def test_every_adapter_the_worker_runs_is_registered_with_its_args_model() -> None:
    assert INPUT_ADAPTERS.names() == sorted(ADAPTERS)
    for name, adapter in ADAPTERS.items():
        assert INPUT_ADAPTERS.check(name, {}) == check_adapter_args(name, {})
        assert adapter.args_model in (FromArtifactsArgs, RechunkArgs)


def test_every_function_the_coordinator_runs_is_registered() -> None:
    assert COORDINATOR_FUNCTIONS.names() == sorted(FUNCTIONS)
    assert {FUNCTIONS[n].args_model for n in ("merge.generic", "metrics.aggregate")} == {FromNodesArgs}


def test_builtin_args_models_keep_their_old_import_paths() -> None:
    from flowkit.coordinator import functions

    assert (pull.FromArtifactsArgs, pull.RechunkArgs) == (FromArtifactsArgs, RechunkArgs)
    assert functions.FromNodesArgs is FromNodesArgs


class _LimitArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int


@pytest.fixture
def registered_function() -> Iterator[str]:
    name = "test.graph_registry.limited"

    @coordinator_function(name, _LimitArgs)
    async def limited(ctx: Any, args: dict[str, Any]) -> None:
        return None

    yield name
    FUNCTIONS.pop(name, None)


def function_graph(fn: str, **fn_args: Any) -> dict[str, Any]:
    return {"nodes": [{"node_id": "m", "type": "coordinator_fn", "io": {"fn": fn, "fn_args": fn_args}}]}


def test_coordinator_function_decorator_registers_its_args_model_for_validation(
    registered_function: str,
) -> None:
    validate_graph(function_graph(registered_function, limit=3))
    with pytest.raises(GraphError) as info:
        validate_graph(function_graph(registered_function, limit="many"))
    assert (info.value.field, info.value.code) == ("io.fn_args", "bad_fn_args")
    assert check_function_args(registered_function, {}) == "limit: Field required"


def test_removing_a_function_from_FUNCTIONS_makes_graphs_using_it_invalid(registered_function: str) -> None:
    FUNCTIONS.pop(registered_function)
    assert registered_function not in COORDINATOR_FUNCTIONS
    with pytest.raises(GraphError) as info:
        validate_graph(function_graph(registered_function, limit=3))
    assert info.value.code == "unknown_fn"


def test_check_adapter_args_keeps_its_messages() -> None:
    assert check_adapter_args("pull.from_artifacts.rechunk:size", {"from_nodes": ["a"]}) == "size is required"
    assert check_adapter_args("pull.from_artifacts", {"from_nodes": ["a"], "x": 1}) == (
        "x is not an argument of this adapter"
    )
    with pytest.raises(KeyError, match=r"unknown input adapter 'pull.nope' \(known: pull.from_artifacts, "):
        check_adapter_args("pull.nope", {})


# --- ArgsRegistry ---------------------------------------------------------------------------


def test_registering_a_name_again_replaces_its_model() -> None:
    registry = ArgsRegistry("widget", lambda err: err["msg"])
    registry.register("w", _LimitArgs)
    assert registry.check("w", {}) == "Field required"
    registry.register("w", None)
    assert registry.check("w", {"anything": 1}) is None


def test_unregistered_name_is_unknown_naming_the_known_ones() -> None:
    registry = ArgsRegistry("widget", lambda err: err["msg"])
    registry.register("b", None)
    registry.register("a", None)
    registry.unregister("b")
    registry.unregister("never-registered")
    with pytest.raises(KeyError, match=r"unknown widget 'b' \(known: a\)"):
        registry.check("b", {})
