"""Layered layout, Mermaid text and SVG drawing of graphs (pure, no I/O)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from flowkit import validate_graph
from flowkit.render import layout_graph, to_mermaid, to_svg
from flowkit.render.layout import assign_layers

DIAMOND_PLUS_SKIP = validate_graph(
    {
        "nodes": [
            {"node_id": "a", "type": "w"},
            {"node_id": "b", "type": "w", "depends_on": ["a"], "io": {"start_when": "first_batch"}},
            {"node_id": "c", "type": "w", "depends_on": ["a"]},
            {"node_id": "d", "type": "w", "depends_on": ["b", "c"], "fan_in": "any"},
            {
                "node_id": "e",
                "type": "coordinator_fn",
                "depends_on": ["a", "d"],
                "io": {"fn": "metrics.aggregate"},
            },
        ]
    }
)


def test_layers_are_the_longest_path_from_a_root() -> None:
    assert assign_layers(DIAMOND_PLUS_SKIP) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}


def test_boxes_of_one_layer_share_a_column_and_do_not_overlap() -> None:
    layout = layout_graph(DIAMOND_PLUS_SKIP)
    b, c = layout.boxes["b"], layout.boxes["c"]
    assert b.x + b.width / 2 == c.x + c.width / 2
    assert b.y + b.height <= c.y or c.y + c.height <= b.y
    assert layout.boxes["a"].x + layout.boxes["a"].width < min(b.x, c.x)


def test_an_edge_skipping_layers_passes_through_gaps_not_boxes() -> None:
    layout = layout_graph(DIAMOND_PLUS_SKIP)
    points = layout.route("a", "e")
    assert len(points) == 2 + 2 * 2  # start, two skipped layers (in and out), end
    for x, y in points[1:-1]:
        for box in layout.boxes.values():
            inside = box.x < x < box.x + box.width and box.y < y < box.y + box.height
            assert not inside, f"edge a->e runs through {box.node_id}"


def test_mermaid_shows_roles_functions_fan_in_and_streaming_edges() -> None:
    text = to_mermaid(DIAMOND_PLUS_SKIP, states={"a": "finished"})
    assert text.startswith("flowchart LR\n")
    assert 'a("<b>a</b><br/>role: w")' in text
    assert 'e{{"<b>e</b><br/>fn: metrics.aggregate"}}' in text
    assert "fan_in: any" in text
    assert "a -. first_batch .-> b" in text
    assert "a --> c" in text
    assert "class a finished" in text


def test_mermaid_renames_ids_mermaid_cannot_take() -> None:
    spec = validate_graph({"nodes": [{"node_id": "end", "type": "w"}, {"node_id": "my-node", "type": "w"}]})
    text = to_mermaid(spec)
    assert 'n0("<b>end</b>' in text
    assert 'n1("<b>my-node</b>' in text


def test_svg_is_well_formed_with_one_group_per_node_and_a_path_per_edge() -> None:
    svg = to_svg(DIAMOND_PLUS_SKIP, states={"a": "finished", "d": "failed"}, notes={"d": "boom"})
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert titles == ["a (finished)", "b", "c", "d (failed)", "e"]
    edges = [p for p in root.iter(f"{ns}path") if p.get("marker-end")]
    assert len(edges) == 6
    assert sum(1 for p in edges if p.get("stroke-dasharray")) == 1  # a -> b streams
    assert "#fee2e2" in svg  # failed fill
    assert "boom" in svg


def test_svg_escapes_node_ids() -> None:
    spec = validate_graph({"nodes": [{"node_id": "a<&>b", "type": "w"}]})
    ET.fromstring(to_svg(spec, title="t & t"))
