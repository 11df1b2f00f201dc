"""``flowkit`` with every MongoDB command counted: the store round trips of a process.

    python bench/trace_store.py coordinator --id ...     # as ``flowkit coordinator ...``

``distributed.py`` starts the coordinator and the worker through this when
``BENCH_TRACE_STORE`` names a directory: each process then writes
``<directory>/<pid>.json`` at exit with, per command and collection, how many were
sent and their summed latency (pymongo's command monitoring: what went to the server,
one entry per round trip). Tracing costs a little CPU per command; figures measured
with it on are not the bench's figures.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from pymongo import monitoring


def _filter_of(command: Any) -> dict[str, Any]:
    """The query of a command (its first, for a batch of updates or deletes): on FerretDB
    a filter on ``_id`` is an index search and any other a scan, so the trace tells them apart."""
    for field in ("filter", "query", "q"):
        if isinstance(command.get(field), dict):
            return dict(command[field])
    for field in ("updates", "deletes"):
        if command.get(field):
            return dict(command[field][0].get("q") or {})
    return {}


class StoreTrace(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.micros: dict[str, int] = defaultdict(int)
        self._names: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:  # type: ignore[override]
        target = event.command.get(event.command_name)
        collection = target if isinstance(target, str) else ""
        keys = ",".join(sorted(_filter_of(event.command)))
        self._names[event.request_id] = f"{event.command_name} {collection} {keys and 'by ' + keys}".strip()

    def _ended(self, event: Any) -> None:
        name = self._names.pop(event.request_id, event.command_name)
        self.count[name] += 1
        self.micros[name] += event.duration_micros

    succeeded = _ended  # type: ignore[assignment]
    failed = _ended  # type: ignore[assignment]

    def dump(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {
            "argv": sys.argv[1:],
            "commands": {n: {"count": c, "ms": self.micros[n] / 1000} for n, c in sorted(self.count.items())},
        }
        (directory / f"{os.getpid()}.json").write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    trace = StoreTrace()
    monitoring.register(trace)
    atexit.register(trace.dump, Path(os.environ.get("BENCH_TRACE_STORE", ".")))
    from flowkit.cli import main as flowkit

    sys.argv[0] = "flowkit"
    sys.exit(flowkit())


if __name__ == "__main__":
    main()
