"""Node metrics: numbers, summed over batches (each batch uid once)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

Metrics = dict[str, float]


def numeric_metrics(metrics: Mapping[str, Any] | None) -> Metrics:
    """Metrics are summed, so only numbers count; bools and text are left out."""
    if not metrics:
        return {}
    return {
        k: v if isinstance(v, int) else float(v)
        for k, v in metrics.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def add_metrics(total: Metrics, more: Mapping[str, float]) -> Metrics:
    """Add ``more`` into ``total`` in place and return it."""
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
    return total


def sum_metrics(parts: Iterable[Mapping[str, float]]) -> Metrics:
    total: Metrics = {}
    for part in parts:
        add_metrics(total, part)
    return total
