"""``flowkit`` with a timeline of its messages and store commands: where a chain's node waits.

    python bench/trace_timeline.py coordinator --id ...   # as ``flowkit coordinator ...``
    python bench/trace_timeline.py show DIR                # a chain's node, step by step

``distributed.py`` starts the coordinator and the worker through this when
``BENCH_TRACE_TIMELINE`` names a directory: each process then writes
``<directory>/<pid>.json`` at exit with the wall-clock time (one clock for all the
processes of a machine) of every Kafka send, its acknowledgement and every message
heard, and of the start and end of every MongoDB command. ``show`` lines the chain's
nodes up: each one is the coordinator's run command, the worker's claim and run end,
its ``finished`` report and the coordinator's next command, and it prints the p50,
p90, maximum and mean of each step. Tracing costs a little CPU per event; figures
measured with it on are not the bench's figures.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

Event = tuple[float, str, str]  # (time, what, detail)

# The events of a chain's node, as (process, what, detail prefix), in the order they come.
RUN_SENT = ("C", "send", "cmd.")
RUN_HEARD = ("W", "heard", "cmd.")
CLAIM_SENT = ("W", "store>", "insert flowkit_runs")
CLAIMED = ("W", "store<", "insert flowkit_runs")
END_SENT = ("W", "store>", "update flowkit_runs")
ENDED = ("W", "store<", "update flowkit_runs")
FINISHED_SENT = ("W", "send", "status.")
FINISHED_HEARD = ("C", "heard", "status.")
STEPS = [
    ("run command: coordinator → worker", RUN_SENT, RUN_HEARD),
    ("worker: command heard → claim sent", RUN_HEARD, CLAIM_SENT),
    ("claim (store)", CLAIM_SENT, CLAIMED),
    ("worker: claimed → run end sent", CLAIMED, END_SENT),
    ("run end (store)", END_SENT, ENDED),
    ("worker: ended → finished sent", ENDED, FINISHED_SENT),
    ("finished: worker → coordinator", FINISHED_SENT, FINISHED_HEARD),
    ("coordinator: finished heard → next command", FINISHED_HEARD, RUN_SENT),
]


class Timeline:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, what: str, detail: str) -> None:
        self.events.append((time.time(), what, detail))

    def dump(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {"process": sys.argv[1] if len(sys.argv) > 1 else "", "events": self.events}
        (directory / f"{os.getpid()}.json").write_text(json.dumps(data) + "\n")


def _logical(topic: str) -> str:
    """``<prefix>.cmd.noop.v1`` → ``cmd.noop.v1``: the name without the installation's prefix."""
    for name in ("cmd.", "status.", "changes.", "signals.", "workers."):
        if name in topic:
            return topic[topic.index(name) :]
    return topic


def _kind(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b"{}").get("kind", "?"))
    except ValueError:
        return "?"


def trace(timeline: Timeline) -> None:
    """Record what aiokafka sends and hears and what pymongo asks, from now on."""
    import aiokafka
    from pymongo import monitoring

    class StoreCommands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: dict[int, str] = {}

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            name = f"{event.command_name} {target if isinstance(target, str) else ''}".strip()
            self.names[event.request_id] = name
            timeline.add("store>", name)

        def _ended(self, event: Any) -> None:
            timeline.add("store<", self.names.pop(event.request_id, event.command_name))

        succeeded = _ended
        failed = _ended

    monitoring.register(StoreCommands())
    gc.callbacks.append(lambda phase, info: timeline.add(f"gc {phase}", f"generation {info['generation']}"))
    send, getone = aiokafka.AIOKafkaProducer.send, aiokafka.AIOKafkaConsumer.getone

    async def traced_send(self: Any, topic: str, value: Any = None, key: Any = None, **options: Any) -> Any:
        detail = f"{_logical(topic)} {_kind(value)}"
        timeline.add("send", detail)
        sent = await send(self, topic, value=value, key=key, **options)
        sent.add_done_callback(lambda _: timeline.add("acked", detail))
        return sent

    async def traced_getone(self: Any, *partitions: Any) -> Any:
        record = await getone(self, *partitions)
        timeline.add("heard", f"{_logical(record.topic)} {_kind(record.value)}")
        return record

    aiokafka.AIOKafkaProducer.send = traced_send
    aiokafka.AIOKafkaConsumer.getone = traced_getone


# -- show --------------------------------------------------------------------------


def load(directory: Path) -> list[tuple[float, str, str, str]]:
    """Every process's events, one time line: (time, "C" or "W", what, detail)."""
    merged = []
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        who = "C" if data["process"] == "coordinator" else "W"
        merged += [(t, who, what, detail) for t, what, detail in data["events"]]
    return sorted(merged)


def _is(event: tuple[float, str, str, str], wanted: tuple[str, str, str]) -> bool:
    _, who, what, detail = event
    return (who, what) == wanted[:2] and detail.startswith(wanted[2])


def step_times(events: list[tuple[float, str, str, str]]) -> dict[str, list[float]]:
    """Milliseconds of each step, one entry per node whose steps all matched in order."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}

    def find(start: int, wanted: tuple[str, str, str]) -> int | None:
        return next((i for i in range(start, len(events)) if _is(events[i], wanted)), None)

    starts = [i for i, event in enumerate(events) if _is(event, RUN_SENT)]
    for first in starts:
        found, at = [], first
        for _, begin, end in STEPS:
            begun = find(at, begin)
            ended = None if begun is None else find(begun + 1, end)
            if begun is None or ended is None:
                break
            found.append((events[ended][0] - events[begun][0]) * 1000)
            at = begun
        if len(found) == len(STEPS):
            for (name, _, _), ms in zip(STEPS, found, strict=True):
                times[name].append(ms)
    return times


def _figures(values: list[float]) -> str:
    """p50, p90, max and mean, in columns."""
    ordered = sorted(values)
    picks = (ordered[len(ordered) // 2], ordered[int(0.9 * (len(ordered) - 1))], ordered[-1])
    return " ".join(f"{v:6.2f}" for v in (*picks, statistics.mean(values)))


def show(directory: Path) -> None:
    times = step_times(load(directory))
    nodes = len(next(iter(times.values())))
    if not nodes:
        sys.exit(f"no chain node found in {directory}: trace a chain (distributed.py's chain shape)")
    print(f"{nodes} nodes matched; ms of each step:")
    print(f"  {'p50':>6} {'p90':>6} {'max':>6} {'mean':>6}")
    for name, values in times.items():
        print(f"  {_figures(values)}  {name}")
    print(f"  {_figures([sum(step) for step in zip(*times.values(), strict=True)])}  (the node)")


def main() -> None:
    if sys.argv[1:2] == ["show"]:
        show(Path(sys.argv[2]))
        return
    timeline = Timeline()
    trace(timeline)
    atexit.register(timeline.dump, Path(os.environ.get("BENCH_TRACE_TIMELINE", ".")))
    from flowkit.cli import main as flowkit

    sys.argv[0] = "flowkit"
    sys.exit(flowkit())


if __name__ == "__main__":
    main()
