"""A layered left-to-right layout: a node's layer is its longest path from a root.

Within a layer, nodes are ordered by the mean position of their dependencies (one
downward sweep), which keeps most pipelines free of crossings without a solver.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..graph import GraphSpec

NODE_HEIGHT = 58.0
LAYER_GAP = 70.0
ROW_GAP = 26.0
MARGIN = 24.0
CHAR_WIDTH = 7.4  # of the 13 px monospace-ish label font; generous on purpose
MIN_WIDTH = 110.0


@dataclass(frozen=True)
class Box:
    """Where one node is drawn: top-left corner and size, in SVG user units."""

    node_id: str
    layer: int
    row: int
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> tuple[float, float]:
        """Middle of the right side, where outgoing edges start."""
        return self.x + self.width, self.y + self.height / 2

    @property
    def left(self) -> tuple[float, float]:
        """Middle of the left side, where incoming edges end."""
        return self.x, self.y + self.height / 2


@dataclass(frozen=True)
class Layout:
    """Boxes by node id and the size of the whole drawing."""

    boxes: dict[str, Box]
    width: float
    height: float
    columns: tuple[tuple[float, float], ...] = ()
    """Left and right x of each layer's column."""

    def route(self, src: str, dst: str) -> list[tuple[float, float]]:
        """Points an edge passes: out of ``src``, through the gaps of skipped layers, into ``dst``.

        An edge that skips layers goes through the free gap of each layer in between
        that is nearest the straight line, so it never runs behind another box.
        """
        a, b = self.boxes[src], self.boxes[dst]
        start, end = a.right, b.left
        points = [start]
        for layer in range(a.layer + 1, b.layer):
            left, right = self.columns[layer]
            share = (left - start[0]) / max(1.0, end[0] - start[0])
            y = _nearest_gap(self._column_boxes(layer), start[1] + share * (end[1] - start[1]))
            points += [(left, y), (right, y)]
        points.append(end)
        return points

    def _column_boxes(self, layer: int) -> list[Box]:
        return sorted((b for b in self.boxes.values() if b.layer == layer), key=lambda b: b.y)


def _nearest_gap(boxes: list[Box], wanted: float) -> float:
    """The y of the free space (between, above or below boxes) closest to ``wanted``."""
    if not boxes:
        return wanted
    gaps = [boxes[0].y - ROW_GAP / 2]
    gaps += [(upper.y + upper.height + lower.y) / 2 for upper, lower in itertools.pairwise(boxes)]
    gaps.append(boxes[-1].y + boxes[-1].height + ROW_GAP / 2)
    inside = any(b.y - 4 <= wanted <= b.y + b.height + 4 for b in boxes)
    return min(gaps, key=lambda g: abs(g - wanted)) if inside else wanted


def assign_layers(graph: GraphSpec) -> dict[str, int]:
    """Longest path from a root; ``graph.nodes`` is in topological order already."""
    layers: dict[str, int] = {}
    for node in graph.nodes:
        layers[node.node_id] = 1 + max((layers[d] for d in node.depends_on), default=-1)
    return layers


def order_layers(graph: GraphSpec, layers: dict[str, int]) -> list[list[str]]:
    """Nodes of each layer, ordered by the mean row of their dependencies (file order breaks ties)."""
    count = 1 + max(layers.values(), default=-1)
    rows: list[list[str]] = [[] for _ in range(count)]
    position: dict[str, float] = {}
    file_order = {n.node_id: i for i, n in enumerate(graph.nodes)}
    deps = {n.node_id: n.depends_on for n in graph.nodes}
    for node in graph.nodes:
        rows[layers[node.node_id]].append(node.node_id)
    for index, row in enumerate(rows):
        if index > 0:
            row.sort(key=lambda nid: (_mean(position[d] for d in deps[nid]), file_order[nid]))
        for place, nid in enumerate(row):
            position[nid] = float(place)
    return rows


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def box_width(lines: Sequence[str]) -> float:
    """Wide enough for the longest of a node's label lines."""
    return max(MIN_WIDTH, 28 + CHAR_WIDTH * max((len(line) for line in lines), default=0))


def layout_graph(graph: GraphSpec, labels: Mapping[str, Sequence[str]] | None = None) -> Layout:
    """Place every node: layers become columns, rows are centred vertically.

    ``labels`` ({node_id: lines}) sizes each box; by default id and role.
    """
    layers = assign_layers(graph)
    rows = order_layers(graph, layers)
    widths = {
        n.node_id: box_width(labels[n.node_id] if labels else [n.node_id, n.io.fn or n.type])
        for n in graph.nodes
    }
    tallest = max((len(r) for r in rows), default=0)
    total_height = tallest * NODE_HEIGHT + max(0, tallest - 1) * ROW_GAP
    boxes: dict[str, Box] = {}
    columns: list[tuple[float, float]] = []
    x = MARGIN
    for layer, row in enumerate(rows):
        column_width = max((widths[n] for n in row), default=MIN_WIDTH)
        columns.append((x, x + column_width))
        row_height = len(row) * NODE_HEIGHT + max(0, len(row) - 1) * ROW_GAP
        y = MARGIN + (total_height - row_height) / 2
        for index, nid in enumerate(row):
            w = widths[nid]
            boxes[nid] = Box(nid, layer, index, x + (column_width - w) / 2, y, w, NODE_HEIGHT)
            y += NODE_HEIGHT + ROW_GAP
        x += column_width + LAYER_GAP
    width = x - LAYER_GAP + MARGIN if rows else 2 * MARGIN
    return Layout(boxes=boxes, width=width, height=total_height + 2 * MARGIN, columns=tuple(columns))
