"""The run's records: what was measured, by runtime, shape and size, and their JSON.

``run.py`` appends a :class:`Record` per measurement and writes ``results.json`` after
each; ``report.py`` and ``targets.py`` read the same records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FLOOR = "asyncio floor"
EMBEDDED = "FlowKit embedded"
DISTRIBUTED = "FlowKit distributed"
CELERY = "Celery + Redis"
PREFECT = "Prefect 3.9"
DAGSTER = "Dagster 1.13"
SERVICES = "services floor"
STORE_CEILING = "store ceiling"
"""The services' record of ``bench/store_ceiling.py``: documents/s and the fan-out ceiling."""
RUNTIMES = (FLOOR, EMBEDDED, DISTRIBUTED, CELERY, PREFECT, DAGSTER)

SHAPES = {
    "chain": "(a) chain of N no-op nodes",
    "fan": "(b) N-wide fan-out + fan-in",
    "streaming": "(c) 3-stage first_batch pipeline of N batches (middle stage rechunk:size)",
    "scale": "(d) N concurrent tasks of 20 nodes",
}
COST = {"chain": "ms_per_node", "fan": "ms_per_node", "streaming": "ms_per_batch", "scale": "ms_per_node"}
RATE = {"fan": "nodes_per_s", "streaming": "batches_per_s", "scale": "nodes_per_s"}


@dataclass
class Record:
    runtime: str
    shape: str
    size: int
    figures: dict[str, float]
    runs: int = 1
    spread: dict[str, list[float]] = field(default_factory=dict)
    error: str = ""
    """Why there are no figures ("did not finish within 240 s (…)", or the failure)."""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class Run:
    command: str
    date: str
    machine: str
    load: str
    records: list[Record]
    timeout_sec: float = 0.0

    def find(
        self, runtime: str, shape: str, size: int | None = None, *, failed: bool = False
    ) -> Record | None:
        """The measured record of ``runtime`` on ``shape`` (the smallest size unless
        ``size``); with ``failed``, a record without figures too."""
        found = sorted(
            (r for r in self.records if r.runtime == runtime and r.shape == shape and (failed or r.ok)),
            key=lambda r: r.size,
        )
        if size is not None:
            found = [r for r in found if r.size == size]
        return found[0] if found else None

    def sizes(self, shape: str) -> list[int]:
        return sorted({r.size for r in self.records if r.shape == shape})


def write_json(run: Run, directory: Path) -> Path:
    """results.json, written after every measurement (atomically: a reader never sees half)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    data: dict[str, Any] = asdict(run)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)
    return path


def read_json(path: Path) -> Run:
    """A run back from its results.json (``report.py results.json`` redraws the table and plot)."""
    data = json.loads(path.read_text())
    data["records"] = [Record(**r) for r in data["records"]]
    return Run(**data)
