"""Drawing a graph: Mermaid text, or an SVG laid out in layers (optionally coloured by node state).

>>> spec = flowkit.validate_graph(graph)
>>> text = to_mermaid(spec)
>>> svg = to_svg(spec, states={"extract": "finished"})
"""

from __future__ import annotations

from .layout import Layout, layout_graph
from .mermaid import to_mermaid
from .png import RenderError, svg_to_png
from .svg import to_svg

__all__ = ["Layout", "RenderError", "layout_graph", "svg_to_png", "to_mermaid", "to_svg"]
