"""Graph model and validation: the only place the rules of a FlowKit graph live.

A graph is ``{"nodes": [...], "edges": [[from, to], ...]}`` as in the seed docs. The
coordinator, the CLI and the operator all call :func:`validate_graph`; none of them
re-implements a rule. Validation collects every problem it can find and raises one
:class:`~flowkit.errors.GraphError` naming each node and field.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import GraphError, GraphProblem
from .graph_registry import COORDINATOR_FUNCTIONS, INPUT_ADAPTERS

COORDINATOR_FN = "coordinator_fn"
DEFAULT_MAX_NODES = 10_000


class RetryPolicy(BaseModel):
    """``max`` attempts in total (1 = no retry), ``backoff_sec`` between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: int = Field(default=1, ge=1)
    backoff_sec: float = Field(default=0.0, ge=0)
    permanent_on: tuple[str, ...] = ()


class NodeIO(BaseModel):
    """How a node gets its input and when it may start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_when: Literal["ready", "first_batch"] = "ready"
    input_inline: dict[str, Any] = Field(default_factory=dict)
    fn: str | None = None
    fn_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def input_adapter(self) -> str | None:
        adapter = self.input_inline.get("input_adapter")
        return adapter if isinstance(adapter, str) else None

    @property
    def input_args(self) -> dict[str, Any]:
        args = self.input_inline.get("input_args", {})
        return args if isinstance(args, dict) else {}


class FanIn(BaseModel):
    """Parsed ``fan_in``: how many dependencies must be satisfied before a start."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["all", "any", "count"]
    count: int = 0

    def required(self, n_deps: int) -> int:
        if self.mode == "all":
            return n_deps
        if self.mode == "any":
            return min(1, n_deps)
        return self.count


class NodeSpec(BaseModel):
    """One step of the graph. ``type`` is a worker role or ``coordinator_fn``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1)
    depends_on: tuple[str, ...] = ()
    fan_in: str = "all"
    io: NodeIO = Field(default_factory=NodeIO)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("depends_on", mode="before")
    @classmethod
    def _accept_single_dependency(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def is_coordinator_fn(self) -> bool:
        return self.type == COORDINATOR_FN

    @property
    def fan_in_rule(self) -> FanIn:
        return parse_fan_in(self.fan_in)


class GraphSpec(BaseModel):
    """A validated graph: nodes in a topological order, dependencies made explicit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[str, str], ...] = ()

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def roles(self) -> set[str]:
        return {n.type for n in self.nodes if not n.is_coordinator_fn}


@functools.lru_cache(maxsize=256)
def parse_fan_in(text: str) -> FanIn:
    """``all`` | ``any`` | ``count:N``; raises ValueError with the accepted forms."""
    if text in ("all", "any"):
        return FanIn(mode="all" if text == "all" else "any")
    if text.startswith("count:"):
        number = text.removeprefix("count:")
        if number.isdigit():
            return FanIn(mode="count", count=int(number))
    raise ValueError(f"must be 'all', 'any' or 'count:N' (got {text!r})")


# --- loading -------------------------------------------------------------------------


def load_graph_file(path: str | Path) -> dict[str, Any]:
    """Read a graph from a YAML or JSON file (``.json`` is read as JSON, anything else as YAML).

    A file that cannot be read or holds no mapping raises :class:`GraphError` with one
    problem: one line naming the file, and the line and column of a syntax error::

        pipeline.yaml:3:7: not valid YAML: mapping values are not allowed here
    """
    path = Path(path)
    data = _parse_graph_text(path, _read_graph_text(path))
    if not isinstance(data, dict):
        raise _file_error("not_a_mapping", f"{path}: holds {_kind(data)}, not a mapping with 'nodes'")
    return data


def _file_error(code: str, message: str) -> GraphError:
    return GraphError([GraphProblem(None, "file", code, message)])


def _read_graph_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _file_error("unreadable", f"{path}: cannot read: {reason[:1].lower()}{reason[1:]}") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a BOM is allowed, and is not content
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise _file_error(
            "not_utf8", f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})"
        ) from None


_NO_DOCUMENT: Any = object()


def _parse_graph_text(path: Path, text: str) -> Any:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_json_object) if text.strip() else _NO_DOCUMENT
        else:
            data = _load_yaml(text)
    except json.JSONDecodeError as exc:
        where, why = f"{path}:{exc.lineno}:{exc.colno}", f"not valid JSON: {exc.msg}"
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        why = f"not valid YAML: {_yaml_problem(exc)}"
    except yaml.reader.ReaderError as exc:  # raised before marks exist: position indexes the text
        line_start = text.rfind("\n", 0, exc.position) + 1
        line = text.count("\n", 0, line_start) + 1
        where = f"{path}:{line}:{exc.position - line_start + 1}"
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        why = f"not valid YAML: unacceptable character #x{ord(char):04x}: {exc.reason}"
    except _DuplicateJSONKey as exc:
        where, why = str(path), f"duplicate key {exc.args[0]!r} in a JSON object"
    except RecursionError:
        where, why = str(path), "cannot parse: nested too deeply"
    else:
        if data is _NO_DOCUMENT:
            raise _file_error("not_a_mapping", f"{path}: is empty; a graph file holds a mapping with 'nodes'")
        return data
    raise _file_error("unparsable", f"{where}: {why}")


class _DuplicateJSONKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys: a graph would lose the first without a word
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJSONKey(key)
        out[key] = value
    return out


def _load_yaml(text: str) -> Any:
    loader = _GraphLoader(text)
    try:
        node = loader.get_single_node()
        return _NO_DOCUMENT if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    # the context is mostly "while scanning ..." (the position says where already), but
    # a problem starting with "but" reads only with it
    problem = exc.problem or exc.context or "syntax error"
    return f"{exc.context} {problem}" if exc.context and problem.startswith("but ") else problem


class _GraphLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in a mapping is an error (as YAML says; PyYAML keeps the last)."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:  # str | None; the stubs disagree
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key, _ in node.value:
            # keys compared as written, with their resolved tag: cheap, and catches a key typed twice
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                first = seen.setdefault((key.tag, key.value), key.start_mark)
                if first is not key.start_mark:
                    raise yaml.composer.ComposerError(
                        problem=f"duplicate key {key.value!r} (first at line {first.line + 1})",
                        problem_mark=key.start_mark,
                    )
        return node


_KINDS = {type(None): "null", list: "a list", str: "a string", bool: "a boolean", int: "a number"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), "a number" if isinstance(value, float) else f"a {type(value).__name__}")


# --- validation ----------------------------------------------------------------------

ArgsChecker = Callable[[str, dict[str, Any]], str | None]
"""Returns None when (name, args) is acceptable, else a message. Raises KeyError if unknown."""


def graph_document(spec: GraphSpec) -> dict[str, Any]:
    """The graph as it is stored with its task: JSON, without the fields at their default
    (it validates back to the same graph; a 1,000-node fan-out is 105 KB, not 268)."""
    return spec.model_dump(mode="json", exclude_defaults=True)


def validate_graph(
    graph: Mapping[str, Any] | GraphSpec,
    *,
    roles: Collection[str] | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    adapters: ArgsChecker | None = None,
    functions: ArgsChecker | None = None,
) -> GraphSpec:
    """Check every rule and return the graph with dependencies made explicit.

    ``roles``: the worker roles that have a handler (None = don't check).
    ``adapters`` / ``functions``: argument checkers; default to the registries of
    :mod:`flowkit.graph_registry`.
    """
    adapters = INPUT_ADAPTERS.check if adapters is None else adapters
    functions = COORDINATOR_FUNCTIONS.check if functions is None else functions
    # mode="json": tuples become lists, so a GraphSpec re-validates like the mapping it came from
    raw = graph.model_dump(mode="json") if isinstance(graph, GraphSpec) else graph
    problems: list[GraphProblem] = []
    nodes = _parse_nodes(raw, max_nodes, problems)
    if nodes is None:
        raise GraphError(problems)
    edges = _parse_edges(raw, problems)
    explicit_deps = _explicit_dependencies(raw)
    nodes = _merge_edges(nodes, edges, explicit_deps, problems)
    nodes = _infer_dependencies_from_sources(nodes, explicit_deps | {dst for _, dst in edges})
    for node in nodes.values():
        _check_node(node, nodes, roles, adapters, functions, problems)
    order = _topological_order(nodes, problems)
    if not problems:
        _check_sources_are_upstream(nodes, problems)
    if problems:
        raise GraphError(problems)
    all_edges = tuple((dep, n.node_id) for n in nodes.values() for dep in n.depends_on)
    return GraphSpec(nodes=tuple(nodes[n] for n in order), edges=all_edges)


def _parse_nodes(
    raw: Mapping[str, Any], max_nodes: int, problems: list[GraphProblem]
) -> dict[str, NodeSpec] | None:
    items = raw.get("nodes")
    if not isinstance(items, list) or not items:
        problems.append(GraphProblem(None, "nodes", "no_nodes", "must be a non-empty list of nodes"))
        return None
    if len(items) > max_nodes:
        problems.append(
            GraphProblem(None, "nodes", "too_large", f"{len(items)} nodes exceed the limit of {max_nodes}")
        )
        return None
    unknown = set(raw) - {"nodes", "edges"}
    if unknown:
        problems.append(
            GraphProblem(
                None,
                ", ".join(sorted(map(str, unknown))),
                "unknown_field",
                "graphs have only nodes and edges",
            )
        )
    nodes: dict[str, NodeSpec] = {}
    for index, item in enumerate(items):
        node_id = item.get("node_id") if isinstance(item, dict) else None
        label = node_id if isinstance(node_id, str) else f"#{index}"
        try:
            node = NodeSpec.model_validate(item)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(label, exc))
            continue
        if node.node_id in nodes:
            problems.append(GraphProblem(node.node_id, "node_id", "duplicate_id", "appears more than once"))
            continue
        nodes[node.node_id] = node
    return nodes


# A wrongly typed value keeps the code its field's own rule uses, so users and tools
# match one code per mistake whichever layer caught it.
_FIELD_CODES = {"fan_in": "bad_fan_in", "io.input_inline": "bad_input_args"}


def _pydantic_problems(label: str, exc: ValidationError) -> list[GraphProblem]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "node"
        code = "unknown_field" if err["type"] == "extra_forbidden" else _FIELD_CODES.get(field, "bad_value")
        message = "is not a known field" if code == "unknown_field" else err["msg"]
        if err["type"] != "missing" and "input" in err and code != "unknown_field":
            message += f" (got {err['input']!r})"
        out.append(GraphProblem(label, field, code, message))
    return out


def _parse_edges(raw: Mapping[str, Any], problems: list[GraphProblem]) -> list[tuple[str, str]]:
    edges = []
    for index, edge in enumerate(raw.get("edges") or []):
        if isinstance(edge, list | tuple) and len(edge) == 2 and all(isinstance(e, str) for e in edge):
            edges.append((edge[0], edge[1]))
        else:
            problems.append(
                GraphProblem(None, f"edges[{index}]", "bad_edge", f"must be [from, to] (got {edge!r})")
            )
    return edges


def _explicit_dependencies(raw: Mapping[str, Any]) -> set[str]:
    """Ids of nodes that spelled out ``depends_on`` themselves."""
    return {
        item["node_id"]
        for item in raw.get("nodes") or []
        if isinstance(item, dict) and "depends_on" in item and isinstance(item.get("node_id"), str)
    }


def _merge_edges(
    nodes: dict[str, NodeSpec],
    edges: list[tuple[str, str]],
    explicit: set[str],
    problems: list[GraphProblem],
) -> dict[str, NodeSpec]:
    """Edges and depends_on describe the same dependencies; they must agree.

    A node without ``depends_on`` takes its dependencies from the edges (and, for
    nodes that read upstream data, from ``from_nodes``: see _check_from_nodes).
    """
    from_edges: dict[str, list[str]] = {}
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                problems.append(
                    GraphProblem(
                        None, "edges", "unknown_node", f"edge [{src}, {dst}] names unknown node '{end}'"
                    )
                )
        if dst in nodes and src not in from_edges.setdefault(dst, []):
            from_edges[dst].append(src)
    merged = dict(nodes)
    for node_id, sources in from_edges.items():
        node = nodes[node_id]
        if node_id in explicit:
            missing = [s for s in sources if s not in node.depends_on and s in nodes]
            if missing:
                problems.append(
                    GraphProblem(
                        node_id,
                        "depends_on",
                        "edges_disagree",
                        f"edges say it depends on {missing}, depends_on says {list(node.depends_on)}",
                    )
                )
        else:
            merged[node_id] = node.model_copy(update={"depends_on": tuple(sources)})
    for node_id in explicit:
        explicit_node = merged.get(node_id)
        if explicit_node is None or not edges:
            continue
        missing_edges = [d for d in explicit_node.depends_on if (d, node_id) not in edges]
        if missing_edges:
            problems.append(
                GraphProblem(
                    node_id,
                    "depends_on",
                    "edges_disagree",
                    f"depends on {missing_edges} but edges has no such edge; "
                    "list every dependency in edges or leave edges out",
                )
            )
    return merged


def _check_node(
    node: NodeSpec,
    nodes: dict[str, NodeSpec],
    roles: Collection[str] | None,
    adapters: ArgsChecker,
    functions: ArgsChecker,
    problems: list[GraphProblem],
) -> None:
    nid = node.node_id

    def problem(field: str, code: str, message: str) -> None:
        problems.append(GraphProblem(nid, field, code, message))

    for dep in node.depends_on:
        if dep == nid:
            problem("depends_on", "self_dependency", "a node cannot depend on itself")
        elif dep not in nodes:
            problem("depends_on", "unknown_dependency", f"'{dep}' is not a node of this graph")
    if len(set(node.depends_on)) != len(node.depends_on):
        problem("depends_on", "duplicate_dependency", f"lists a dependency twice: {list(node.depends_on)}")
    try:
        rule = node.fan_in_rule
    except ValueError as exc:
        problem("fan_in", "bad_fan_in", str(exc))
    else:
        n_deps = len(node.depends_on)
        if rule.mode == "count" and not 1 <= rule.count <= n_deps:
            problem(
                "fan_in", "bad_fan_in", f"count:{rule.count} is out of range 1..{n_deps} (its dependencies)"
            )
    if node.is_coordinator_fn:
        _check_function(node, functions, problem)
    else:
        if roles is not None and node.type not in roles:
            problem("type", "unknown_role", f"no handler serves role '{node.type}' (known: {sorted(roles)})")
        if node.io.fn is not None:
            problem("io.fn", "fn_on_worker_node", "only coordinator_fn nodes take io.fn")
        _check_adapter(node, adapters, problem)


def _check_function(node: NodeSpec, functions: ArgsChecker, problem: Callable[[str, str, str], None]) -> None:
    if node.io.fn is None:
        problem("io.fn", "missing_fn", "coordinator_fn nodes must name a function in io.fn")
        return
    try:
        message = functions(node.io.fn, node.io.fn_args)
    except KeyError as exc:
        problem("io.fn", "unknown_fn", str(exc.args[0]) if exc.args else f"unknown function '{node.io.fn}'")
        return
    if message:
        problem("io.fn_args", "bad_fn_args", message)


def _check_adapter(node: NodeSpec, adapters: ArgsChecker, problem: Callable[[str, str, str], None]) -> None:
    if "input_adapter" not in node.io.input_inline:
        return
    name = node.io.input_adapter
    if name is None:
        problem("io.input_inline.input_adapter", "bad_input_adapter", "must be a string")
        return
    if not isinstance(node.io.input_inline.get("input_args", {}), dict):
        problem("io.input_inline.input_args", "bad_input_args", "must be a mapping")
        return
    try:
        message = adapters(name, node.io.input_args)
    except KeyError as exc:
        problem("io.input_inline.input_adapter", "bad_input_adapter", str(exc.args[0]))
        return
    if message:
        problem("io.input_inline.input_args", "bad_input_args", message)


def _topological_order(nodes: dict[str, NodeSpec], problems: list[GraphProblem]) -> list[str]:
    """Kahn's algorithm; on a cycle, name the nodes on one cycle in order."""
    indegree = {nid: 0 for nid in nodes}
    dependents: dict[str, list[str]] = {nid: [] for nid in nodes}
    for node in nodes.values():
        for dep in set(node.depends_on):
            if dep in nodes and dep != node.node_id:
                indegree[node.node_id] += 1
                dependents[dep].append(node.node_id)
    ready = deque(nid for nid, deg in indegree.items() if deg == 0)  # FIFO keeps the file's order
    order: list[str] = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for child in dependents[nid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) < len(nodes):
        cycle = _find_cycle({n for n, d in indegree.items() if d > 0}, nodes)
        problems.append(
            GraphProblem(cycle[0], "depends_on", "cycle", "dependency cycle: " + " -> ".join(cycle))
        )
    return order


def _find_cycle(remaining: set[str], nodes: dict[str, NodeSpec]) -> list[str]:
    """Walk dependencies inside the unsorted rest until a node repeats."""
    start = min(remaining)
    path: list[str] = []
    seen: dict[str, int] = {}
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(d for d in nodes[current].depends_on if d in remaining and d != current)
    cycle = [*path[seen[current] :], current]
    cycle.reverse()  # print in data-flow order: upstream -> downstream
    return cycle


def source_nodes(node: NodeSpec) -> list[str]:
    """The upstream nodes whose artifacts a node reads (``from_nodes``, alias ``from_node``)."""
    args = node.io.fn_args if node.is_coordinator_fn else node.io.input_args
    if node.is_coordinator_fn or node.io.input_adapter is not None:
        names = args.get("from_nodes", args.get("from_node"))
        if isinstance(names, str):
            return [names]
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return list(names)
    return []


def _infer_dependencies_from_sources(nodes: dict[str, NodeSpec], given: set[str]) -> dict[str, NodeSpec]:
    """A node that reads ``from_nodes`` but states no dependencies waits for those nodes.

    This makes the seed docs' coordinator-function example (only ``io``) work as written.
    """
    out = dict(nodes)
    for node_id, node in nodes.items():
        sources = source_nodes(node)
        if node_id not in given and sources:
            out[node_id] = node.model_copy(update={"depends_on": tuple(dict.fromkeys(sources))})
    return out


def _check_sources_are_upstream(nodes: dict[str, NodeSpec], problems: list[GraphProblem]) -> None:
    for node in nodes.values():
        sources = source_nodes(node)
        if not sources:
            continue
        if node.is_coordinator_fn:
            field, code = "io.fn_args.from_nodes", "bad_fn_args"
        else:
            field, code = "io.input_inline.input_args.from_nodes", "bad_input_args"
        upstream = _ancestors(nodes, node.node_id)
        for source in sources:
            if source not in nodes:
                why = f"'{source}' is not a node of this graph"
            elif source not in upstream:
                why = f"'{source}' is not upstream of this node; add it to depends_on"
            else:
                continue
            problems.append(GraphProblem(node.node_id, field, code, why))


def ancestors(graph: GraphSpec, node_id: str) -> set[str]:
    """Every node ``node_id`` transitively depends on."""
    return _ancestors({n.node_id: n for n in graph.nodes}, node_id)


def _ancestors(by_id: Mapping[str, NodeSpec], node_id: str) -> set[str]:
    found: set[str] = set()
    stack = list(by_id[node_id].depends_on)
    while stack:
        dep = stack.pop()
        if dep not in found and dep in by_id:
            found.add(dep)
            stack.extend(by_id[dep].depends_on)
    return found
