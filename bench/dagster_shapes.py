"""The chain and fan shapes on Dagster 1.13, in-process: a job of no-op ops.

Runs in the peers' virtualenv (``inprocess_peers.py``), driven by ``inprocess_run.py``,
with ``DAGSTER_HOME`` a temporary directory (set there).

Each run is ``job.execute_in_process(instance=...)`` on one ``DagsterInstance.ephemeral()``
(in-memory run, event log and schedule storage; telemetry is off for an ephemeral
instance). That is Dagster's in-process path with its defaults: the job's executor is
replaced by the ``in_process`` executor (one step after another, in this process) and
the default IO manager by the in-memory one; the default console logger writes every
event (DEBUG) to stderr, here the measurement's log file.

One op, ``noop``, with a ``Nothing`` input ``after`` (an ordering dependency that
passes no data, like FlowKit's ``depends_on``), placed under an alias per node:

- chain: ``n0 … n{N-1}``, each ``after`` the previous one.
- fan: ``root``; ``w0 … w{N-1}`` each ``after`` root; ``sink`` ``after`` all N
  (a fan-in, ``MultiDependencyDefinition``): N + 2 steps.

The job is built before the clock starts (as FlowKit's graph is); building even the
2,002-op fan takes under 0.1 s.
"""

from __future__ import annotations

from collections.abc import Callable

from dagster import (
    DagsterInstance,
    DependencyDefinition,
    GraphDefinition,
    In,
    JobDefinition,
    MultiDependencyDefinition,
    NodeInvocation,
    Nothing,
    op,
)

Dependencies = dict[NodeInvocation, dict[str, DependencyDefinition | MultiDependencyDefinition]]

INSTANCE = DagsterInstance.ephemeral()
"""The instance every run in this process reports to (nothing is written to disk)."""


@op(ins={"after": In(Nothing)})
def noop() -> None:
    """Does nothing: the figures are Dagster's own overhead."""


def _job(name: str, dependencies: Dependencies) -> JobDefinition:
    return GraphDefinition(name=name, node_defs=[noop], dependencies=dependencies).to_job()


def chain_job(nodes: int) -> JobDefinition:
    dependencies: Dependencies = {NodeInvocation("noop", alias="n0"): {}}
    for i in range(1, nodes):
        dependencies[NodeInvocation("noop", alias=f"n{i}")] = {"after": DependencyDefinition(f"n{i - 1}")}
    return _job(f"chain_{nodes}", dependencies)


def fan_job(width: int) -> JobDefinition:
    middle = [f"w{i}" for i in range(width)]
    dependencies: Dependencies = {NodeInvocation("noop", alias="root"): {}}
    for name in middle:
        dependencies[NodeInvocation("noop", alias=name)] = {"after": DependencyDefinition("root")}
    everything = MultiDependencyDefinition([DependencyDefinition(name) for name in middle])
    dependencies[NodeInvocation("noop", alias="sink")] = {"after": everything}
    return _job(f"fan_{width}", dependencies)


def _run(job: JobDefinition) -> dict[str, float]:
    result = job.execute_in_process(instance=INSTANCE)
    if not result.success:
        raise RuntimeError(f"Dagster run {result.run_id} of job {job.name} did not succeed")
    return {}


def warm_up() -> None:
    """One job of one op, off the clock: Dagster's lazy imports and first-run set-up."""
    _run(chain_job(1))


def prepare(shape: str, size: int) -> Callable[[], dict[str, float]]:
    """What the clock times: one ``execute_in_process`` of ``shape`` at ``size``."""
    jobs = {"chain": chain_job, "fan": fan_job}
    if shape not in jobs:
        raise ValueError(f"no Dagster job for shape {shape!r} (have: {', '.join(jobs)})")
    job = jobs[shape](size)
    return lambda: _run(job)
