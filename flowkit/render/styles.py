"""Colours by node state, shared by the SVG renderer, Mermaid classes and the CLI."""

from __future__ import annotations

# state -> (fill, stroke); "pending" is a graph drawn without a status.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "pending": ("#f5f7fa", "#8a94a6"),
    "queued": ("#eef1f5", "#8a94a6"),
    "running": ("#dbeafe", "#2563eb"),
    "deferred": ("#fef3c7", "#d97706"),
    "finished": ("#dcfce7", "#16a34a"),
    "failed": ("#fee2e2", "#dc2626"),
    "cancelling": ("#ede9fe", "#7c3aed"),
    "cancelled": ("#e5e7eb", "#4b5563"),
}

FUNCTION_FILL = "#fdf4ff"
FUNCTION_STROKE = "#a21caf"


def colours(state: str | None) -> tuple[str, str]:
    """(fill, stroke) of a state; unknown or missing states draw as pending."""
    return STATE_COLOURS.get(state or "pending", STATE_COLOURS["pending"])
