"""SVG → PNG, only when a converter is already installed (FlowKit adds no heavy dependency)."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import FlowKitError


class RenderError(FlowKitError):
    """A drawing could not be produced; the message says what to do instead."""


def svg_to_png(svg: str) -> bytes:
    """Convert with ``cairosvg`` if it is importable, else raise RenderError suggesting SVG."""
    try:
        cairosvg: Any = importlib.import_module("cairosvg")
    except ImportError:
        raise RenderError(
            "PNG output needs the 'cairosvg' package (pip install cairosvg), which is not installed; "
            "use --format svg (any browser opens it) or convert it: rsvg-convert graph.svg -o graph.png"
        ) from None
    data: bytes = cairosvg.svg2png(bytestring=svg.encode())
    return data
