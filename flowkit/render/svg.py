"""A standalone SVG of a graph: layered boxes, curved arrows, colours by node state.

Worker nodes are rounded boxes (id, role); coordinator functions have cut corners and
a purple outline (id, function). Edges into ``start_when: first_batch`` nodes are
dashed: data streams along them while the upstream still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape

from ..graph import GraphSpec, NodeSpec
from .layout import Box, layout_graph
from .styles import FUNCTION_STROKE, STATE_COLOURS, colours

LEGEND_HEIGHT = 34.0
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def node_lines(node: NodeSpec, note: str | None = None) -> list[str]:
    """Label lines: id, role (or ``ƒ function``), then fan-in / streaming / the note."""
    second = f"ƒ {node.io.fn}" if node.is_coordinator_fn else f"role: {node.type}"
    extras = []
    if node.fan_in != "all":
        extras.append(f"fan_in {node.fan_in}")
    if node.io.start_when == "first_batch":
        extras.append("first_batch")
    if note:
        extras.append(note)
    lines = [node.node_id, second]
    if extras:
        lines.append(" · ".join(extras))
    return lines


def to_svg(
    graph: GraphSpec,
    states: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """Draw ``graph``. ``states``: {node_id: state} colours nodes; ``notes``: a short third line."""
    states = states or {}
    notes = notes or {}
    labels = {n.node_id: node_lines(n, notes.get(n.node_id)) for n in graph.nodes}
    layout = layout_graph(graph, labels)
    top = 30.0 if title else 0.0
    width = max(layout.width, 420.0)
    height = layout.height + top + LEGEND_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT} font-size="13">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker>'
        "</defs>",
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    if title:
        parts.append(f'<text x="24" y="22" font-size="15" font-weight="bold">{escape(title)}</text>')
    parts.append(f'<g transform="translate(0,{top:.0f})">')
    for node in graph.nodes:
        for dep in node.depends_on:
            parts.append(_edge(layout.route(dep, node.node_id), node.io.start_when))
    for node in graph.nodes:
        parts.append(_node(node, layout.boxes[node.node_id], labels[node.node_id], states.get(node.node_id)))
    parts.append("</g>")
    parts.append(_legend(sorted(set(states.values())), layout.height + top, bool(states)))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _edge(points: list[tuple[float, float]], start_when: str) -> str:
    """Horizontal-tangent curves between gaps, straight runs across skipped columns."""
    x0, y0 = points[0]
    path = [f"M {x0:.1f} {y0:.1f}"]
    for index in range(1, len(points)):
        (x1, y1), (x2, y2) = points[index - 1], points[index]
        if index == len(points) - 1:
            x2 -= 2  # leave room for the arrow head
        if index % 2 == 0:  # across a skipped column
            path.append(f"L {x2:.1f} {y2:.1f}")
            continue
        bend = max(20.0, (x2 - x1) / 2)
        path.append(f"C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}")
    dash = ' stroke-dasharray="6 4"' if start_when == "first_batch" else ""
    return (
        f'<path d="{" ".join(path)}" fill="none" stroke="#64748b" stroke-width="1.6"{dash} '
        'marker-end="url(#arrow)"/>'
    )


def _node(node: NodeSpec, box: Box, lines: list[str], state: str | None) -> str:
    fill, stroke = colours(state)
    if node.is_coordinator_fn and state is None:
        stroke = FUNCTION_STROKE
    outline = _function_outline(box) if node.is_coordinator_fn else _rounded_outline(box)
    shape = outline.format(fill=fill, stroke=stroke)
    tip = f"{node.node_id} ({state})" if state else node.node_id
    texts = []
    baseline = box.y + 20 if len(lines) > 2 else box.y + 25
    for index, line in enumerate(lines):
        weight = ' font-weight="bold"' if index == 0 else ""
        size = "" if index == 0 else ' font-size="11" fill="#334155"'
        texts.append(
            f'<text x="{box.x + box.width / 2:.1f}" y="{baseline + index * 15:.1f}" '
            f'text-anchor="middle"{weight}{size}>{escape(line)}</text>'
        )
    return f"<g><title>{escape(tip)}</title>{shape}{''.join(texts)}</g>"


def _rounded_outline(box: Box) -> str:
    return (
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" '
        'rx="10" ry="10" fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
    )


def _function_outline(box: Box) -> str:
    cut = 12.0
    x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
    points = [
        (x0 + cut, y0), (x1 - cut, y0), (x1, y0 + box.height / 2), (x1 - cut, y1),
        (x0 + cut, y1), (x0, y0 + box.height / 2),
    ]  # fmt: skip
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polygon points="{text}" fill="{{fill}}" stroke="{{stroke}}" stroke-width="2"/>'


def _legend(states: list[str], y: float, coloured: bool) -> str:
    y += 12
    items = [
        f'<path d="M 24 {y + 6:.1f} L 60 {y + 6:.1f}" stroke="#64748b" stroke-width="1.6" '
        'stroke-dasharray="6 4"/>',
        f'<text x="66" y="{y + 10:.1f}" font-size="11" fill="#334155">streams (first_batch)</text>',
    ]
    x = 200.0
    for state in states if coloured else []:
        if state not in STATE_COLOURS:
            continue
        fill, stroke = STATE_COLOURS[state]
        items.append(
            f'<rect x="{x:.0f}" y="{y:.1f}" width="14" height="12" rx="3" fill="{fill}" stroke="{stroke}"/>'
        )
        items.append(f'<text x="{x + 19:.0f}" y="{y + 10:.1f}" font-size="11" fill="#334155">{state}</text>')
        x += 30 + 7 * len(state)
    return "<g>" + "".join(items) + "</g>"
