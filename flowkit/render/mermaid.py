"""Mermaid flowchart text for a graph (paste into any Mermaid viewer, or a Markdown file).

Worker nodes are rounded boxes labelled with id and role; coordinator functions are
hexagons labelled with the function. ``fan_in`` other than ``all`` is shown in the
label; edges into a ``start_when: first_batch`` node are dashed and say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..graph import GraphSpec, NodeSpec
from .styles import STATE_COLOURS

_SAFE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class", "classDef", "click", "default"}


def mermaid_ids(graph: GraphSpec) -> dict[str, str]:
    """A Mermaid-safe identifier per node: the node id itself when it is one, else ``n<index>``."""
    return {
        n.node_id: n.node_id if _SAFE_ID.match(n.node_id) and n.node_id not in _RESERVED else f"n{i}"
        for i, n in enumerate(graph.nodes)
    }


def _label(node: NodeSpec) -> str:
    lines = [f"<b>{node.node_id}</b>"]
    lines.append(f"fn: {node.io.fn}" if node.is_coordinator_fn else f"role: {node.type}")
    if node.fan_in != "all":
        lines.append(f"fan_in: {node.fan_in}")
    if node.io.start_when != "ready":
        lines.append(f"start_when: {node.io.start_when}")
    text = "<br/>".join(lines)
    return text.replace('"', "#quot;")


def to_mermaid(graph: GraphSpec, states: Mapping[str, str] | None = None) -> str:
    """``flowchart LR`` text; with ``states`` ({node_id: state}) nodes are classed by state."""
    ids = mermaid_ids(graph)
    out = ["flowchart LR"]
    for node in graph.nodes:
        label = _label(node)
        shape = '{{"%s"}}' if node.is_coordinator_fn else '("%s")'
        out.append(f"    {ids[node.node_id]}{shape % label}")
    for node in graph.nodes:
        for dep in node.depends_on:
            arrow = " -. first_batch .-> " if node.io.start_when == "first_batch" else " --> "
            out.append(f"    {ids[dep]}{arrow}{ids[node.node_id]}")
    if states:
        used = sorted({s for s in states.values() if s in STATE_COLOURS})
        for state in used:
            fill, stroke = STATE_COLOURS[state]
            out.append(f"    classDef {state} fill:{fill},stroke:{stroke},stroke-width:2px")
        for node_id, state in states.items():
            if node_id in ids and state in STATE_COLOURS:
                out.append(f"    class {ids[node_id]} {state}")
    return "\n".join(out) + "\n"
