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
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, task
from prefect.futures import wait
from prefect.states import State


@task
def noop(*upstream: object) -> None:
    """Does nothing: the figures are Prefect's own overhead."""


@flow
def chain(nodes: int) -> None:
    previous = noop()
    for _ in range(nodes - 1):
        previous = noop(previous)


@flow
def fan(width: int) -> None:
    root = noop()
    middle = [noop.submit(root) for _ in range(width)]
    wait(middle)
    noop(wait_for=middle)


def _completed(state: State) -> None:
    if not state.is_completed():
        raise RuntimeError(f"Prefect flow run ended {state.type.value}: {state.message}")


def warm_up() -> None:
    """One flow of one task: Prefect's temporary server starts here, off the clock."""
    _completed(chain(1, return_state=True))


def prepare(shape: str, size: int) -> Callable[[], None]:
    """What the clock times: one flow run of ``shape`` at ``size``."""
    flows = {"chain": chain, "fan": fan}
    if shape not in flows:
        raise ValueError(f"no Prefect flow for shape {shape!r} (have: {', '.join(flows)})")
    return lambda: _completed(flows[shape](size, return_state=True))
