"""The chain and fan shapes on Prefect 3.9, in-process: a flow of no-op ``@task`` calls.

Runs in the peers' virtualenv (``inprocess_peers.py``), driven by ``inprocess_run.py``;
the settings it runs under (a temporary ``PREFECT_HOME``, SQLite in it, no analytics)
are set by ``inprocess_peers.py`` and explained there.

Everything is Prefect's default for a flow called in the user's own process: no
``PREFECT_API_URL``, so the first flow starts Prefect's temporary API server (a
uvicorn subprocess on SQLite) and every run reports to it; the flow's task runner is
the default ``ThreadPoolTaskRunner`` (no thread limit); results are not persisted;
task run logs go to the console and to the API, as they do by default.

- chain: ``previous = noop(previous)`` N times: each task is called in the flow's
  thread once the previous one has returned its result.
- fan: ``noop()`` (the root), then N ``noop.submit(root)`` on the thread pool,
  ``wait`` for all N, then the sink ``noop(wait_for=middle)``: N + 2 task runs.

A flow run costs up to a second more than its tasks (``one_node_run_ms`` in the
figures is about 1,100 ms): on its way out it joins its heartbeat thread, which sleeps
in one-second steps, so a flow call's time is rounded up to about a whole second. That
is in ``ms_per_node``, as it is in every user's flow call (at N = 50 it is most of it);
``in_flow_ms_per_node`` is the flow body's time alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import flow, task
from prefect.futures import wait
from prefect.states import State


@task
def noop(*upstream: object) -> None:
    """Does nothing: the figures are Prefect's own overhead."""


@flow
def chain(nodes: int) -> float:
    """The chain; returns how long its body took."""
    started = time.perf_counter()
    previous = noop()
    for _ in range(nodes - 1):
        previous = noop(previous)
    return time.perf_counter() - started


@flow
def fan(width: int) -> float:
    """The fan; returns how long its body took."""
    started = time.perf_counter()
    root = noop()
    middle = [noop.submit(root) for _ in range(width)]
    wait(middle)
    noop(wait_for=middle)
    return time.perf_counter() - started


def _body_s(state: State) -> float:
    if not state.is_completed():
        raise RuntimeError(f"Prefect flow run ended {state.type.value}: {state.message}")
    return float(state.result())


def warm_up() -> None:
    """One flow of one task: Prefect's temporary server starts here, off the clock."""
    _body_s(chain(1, return_state=True))


def prepare(shape: str, size: int) -> Callable[[], dict[str, float]]:
    """What the clock times: one flow run of ``shape`` at ``size``. It gives
    ``in_flow_ms_per_node`` too: the flow body's time per node, without the flow run's
    start and end (the second above), what the tasks themselves cost."""
    flows = {"chain": (chain, size), "fan": (fan, size + 2)}
    if shape not in flows:
        raise ValueError(f"no Prefect flow for shape {shape!r} (have: {', '.join(flows)})")
    run, nodes = flows[shape]
    return lambda: {"in_flow_ms_per_node": _body_s(run(size, return_state=True)) * 1000 / nodes}
