"""The commands of a distributed installation: its processes and the client commands.

::

    flowkit coordinator
    flowkit worker --roles extractor,transformer --handlers examples.etl.handlers:HANDLERS
    flowkit submit examples/etl/pipeline.yaml --wait
    flowkit status TASK_ID | watch TASK_ID | cancel TASK_ID | tasks | workers

Where MongoDB and Kafka are is read as :mod:`.flags` says (flag > environment > file >
default); one that cannot be reached is one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from ..config import CoordinatorConfig, WorkerConfig
from ..errors import ConfigError
from ..states import State, TaskStatus
from .client import Client, open_client
from .connection import ClientSettings
from .flags import ConnectionFlags, connection_options, run_async
from .follow import watch_task
from .inputs import load_handlers, parse_params
from .listing import tasks_table, workers_table
from .logs import configure_logging
from .messages import EXIT_FAILED, EXIT_INTERRUPTED, fail, load_spec, stderr, stdout_console
from .progress import ChangeLog, ProgressView, summary_table
from .service import log_to_stderr, serve_coordinator, serve_worker
from .session import RunOutcome


def _quiet_client_logs() -> None:
    # Errors reach the user as one line of ours; aiokafka would add its own per retry.
    configure_logging(stderr, logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# -- the processes -------------------------------------------------------------------


@click.command()
@click.option("--id", "coordinator_id", metavar="ID", default=None, help="Default: coord-<random>.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
@connection_options
def coordinator(flags: ConnectionFlags, coordinator_id: str | None, verbose: bool) -> None:
    """Run a coordinator until SIGTERM/SIGINT: it adopts submitted tasks and schedules their nodes."""
    cfg = flags.load(CoordinatorConfig, coordinator_id=coordinator_id)
    log_to_stderr(verbose)
    sys.exit(run_async(serve_coordinator(cfg)))


@click.command()
@click.option(
    "--roles",
    metavar="A,B",
    default=None,
    help="The roles to take work for (env FLOWKIT_WORKER_ROLES); each needs a handler.",
)
@click.option(
    "--handlers",
    "handlers_spec",
    required=True,
    metavar="MODULE:ATTR",
    help="A dict mapping role → Handler instance (MODULE is imported from the current directory).",
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=None,
    help="Node runs at once (env FLOWKIT_WORKER_CAPACITY; default 1).",
)
@click.option(
    "--health-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve /healthz (alive) and /readyz (taking work) on this port, for probes "
    "(env FLOWKIT_WORKER_HEALTH_PORT; default: none).",
)
@click.option("--id", "worker_id", metavar="ID", default=None, help="Default: worker-<random>.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
@connection_options
def worker(
    flags: ConnectionFlags,
    roles: str | None,
    handlers_spec: str,
    capacity: int | None,
    health_port: int | None,
    worker_id: str | None,
    verbose: bool,
) -> None:
    """Run a worker until SIGTERM (drains: running attempts may finish) or SIGINT."""
    try:
        handlers = load_handlers(handlers_spec)
    except ConfigError as exc:
        fail(str(exc))
    role_list = [r.strip() for r in roles.split(",") if r.strip()] if roles is not None else None
    cfg = flags.load(
        WorkerConfig, roles=role_list, capacity=capacity, worker_id=worker_id, health_port=health_port
    )
    if not cfg.roles:
        fail("no roles: pass --roles a,b (or set FLOWKIT_WORKER_ROLES, or roles in --config)")
    missing = [role for role in cfg.roles if role not in handlers]
    if missing:
        fail(
            f"--roles: no handler for {', '.join(map(repr, missing))} in {handlers_spec} "
            f"(it has: {', '.join(sorted(handlers))})"
        )
    log_to_stderr(verbose)
    sys.exit(run_async(serve_worker(cfg, handlers)))


# -- the client commands ---------------------------------------------------------------


@dataclass(frozen=True)
class Display:
    """How progress shows: a live table on a terminal, else change lines (none with --json)."""

    as_json: bool
    person: bool

    @classmethod
    def on_stderr(cls, as_json: bool) -> Display:
        display = cls(as_json=as_json, person=stderr.is_terminal)
        if not display.person:  # CI logs and pipes: keep lines whole instead of 80 columns
            stderr.width = max(stderr.width, 120)
        return display

    @property
    def quiet(self) -> bool:
        return self.as_json and not self.person


async def _watch(client: Client, task_id: str, display: Display, timeout: float | None) -> RunOutcome:
    view, changes = ProgressView(), ChangeLog(stderr)

    def on_status(status: TaskStatus) -> None:
        if display.person:
            view.update(status)
        elif not display.quiet:
            changes.update(status)

    if not display.person:
        return await watch_task(client.store, task_id, on_status, timeout=timeout)
    with view.live(stderr):
        return await watch_task(client.store, task_id, on_status, timeout=timeout)


def _report(outcome: RunOutcome, display: Display, timeout: float | None) -> NoReturn:
    """The summary (table or JSON), then exit as ``flowkit run`` does."""
    status = outcome.status
    _print_status(status, display)
    if outcome.interrupted or outcome.timed_out:
        why = "interrupted" if outcome.interrupted else f"timed out after {timeout}s"
        task_id = status.task_id
        stderr.print(
            f"[yellow]{why}: stopped watching; task {task_id} keeps running (flowkit cancel {task_id})[/]",
            highlight=False,
        )
        sys.exit(EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED)
    sys.exit(0 if status.status == State.FINISHED else EXIT_FAILED)


def _print_status(status: TaskStatus, display: Display) -> None:
    if display.as_json:
        click.echo(json.dumps(status.summary(), indent=2, default=str))
        if display.person:
            stderr.print(summary_table(status))
    else:
        stdout_console().print(summary_table(status))


@click.command()
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task parameter (repeatable); VALUE is JSON if it parses, else a string.",
)
@click.option("--wait", is_flag=True, help="Follow the task to its end; exit code as `flowkit run`.")
@click.option("--json", "as_json", is_flag=True, help="Print only the status as JSON on stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --wait: stop watching after this long (exit 1); the task keeps running.",
)
@click.option(
    "--id", "task_id", metavar="TASK_ID", default=None, help="Default: random. An existing id is kept as is."
)
@connection_options
def submit(
    flags: ConnectionFlags,
    graph_file: str,
    params: tuple[str, ...],
    wait: bool,
    as_json: bool,
    timeout: float | None,
    task_id: str | None,
) -> None:
    """Hand GRAPH_FILE to the installation's coordinators and print the task id.

    The graph is checked first: nothing is stored when it is invalid (exit 2).
    """
    try:
        task_params = parse_params(params)
    except ConfigError as exc:
        fail(str(exc))
    spec = load_spec(graph_file)
    settings = flags.load(ClientSettings)
    display = Display.on_stderr(as_json)
    _quiet_client_logs()

    async def submit_and_watch() -> RunOutcome | None:
        async with open_client(settings, kafka=True) as client:
            submitted = await client.submit(spec, task_params, task_id)
            if not submitted.created:
                stderr.print(f"task {submitted.task_id} exists already: not submitted again", style="yellow")
            if wait and as_json:
                if display.person:
                    stderr.print(f"task {submitted.task_id}", highlight=False)
            elif as_json:
                click.echo(json.dumps((await client.status(submitted.task_id)).summary(), indent=2))
            else:
                click.echo(submitted.task_id)
            if not wait:
                return None
            return await _watch(client, submitted.task_id, display, timeout)

    outcome = run_async(submit_and_watch())
    if outcome is not None:
        _report(outcome, display, timeout)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print only the final status as JSON on stdout.")
@connection_options
def watch(flags: ConnectionFlags, task_id: str, as_json: bool) -> None:
    """Show TASK_ID live until it ends; exit code by its final state (Ctrl-C stops watching: 130)."""
    settings = flags.load(ClientSettings)
    display = Display.on_stderr(as_json)
    _quiet_client_logs()

    async def follow() -> RunOutcome:
        async with open_client(settings, kafka=True) as client:
            return await _watch(client, task_id, display, None)

    _report(run_async(follow()), display, None)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (`flowkit run --json`).")
@connection_options
def status(flags: ConnectionFlags, task_id: str, as_json: bool) -> None:
    """Print TASK_ID's nodes and state (needs MongoDB only)."""
    settings = flags.load(ClientSettings)
    _quiet_client_logs()

    async def read() -> TaskStatus:
        async with open_client(settings, kafka=False) as client:
            return await client.status(task_id)

    task = run_async(read())
    _print_status(task, Display(as_json=as_json, person=False))
    if not as_json:
        stdout_console().print(_holder(task), style="dim", highlight=False)


def _holder(task: TaskStatus) -> str:
    if task.cancel_requested and not task.status.terminal:
        return f"cancel requested ({task.cancel_requested}); held by {task.owner or 'no coordinator yet'}"
    if task.status.terminal:
        return f"ended; last held by {task.owner or '-'}"
    return f"held by coordinator {task.owner}" if task.owner else "waiting for a coordinator to adopt it"


@click.command()
@click.argument("task_id")
@connection_options
def cancel(flags: ConnectionFlags, task_id: str) -> None:
    """Ask TASK_ID's coordinator to cancel it (handlers see ctx.cancel_flag); exit 0 if it had ended."""
    settings = flags.load(ClientSettings)
    _quiet_client_logs()

    async def request() -> Any:
        async with open_client(settings, kafka=True) as client:
            return await client.cancel(task_id)

    outcome = run_async(request())
    state = outcome.status.status.value
    if not outcome.requested:
        click.echo(f"task {task_id} has already ended ({state}): nothing to cancel")
    elif outcome.status.owner:
        click.echo(f"cancel requested: task {task_id} ({state}) is cancelled by {outcome.status.owner}")
    else:
        click.echo(f"cancel requested: task {task_id} ({state}) is cancelled when a coordinator adopts it")


@click.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in State]),
    help="Only tasks in this state (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="The most recent N.")
@connection_options
def tasks(flags: ConnectionFlags, states: tuple[str, ...], limit: int) -> None:
    """List the most recent tasks: id, state, nodes done, created, owner (needs MongoDB only)."""
    settings = flags.load(ClientSettings)
    _quiet_client_logs()

    async def read() -> list[TaskStatus]:
        async with open_client(settings, kafka=False) as client:
            return await client.tasks({State(s) for s in states} or None, limit)

    found = run_async(read())
    if not found:
        stderr.print("no tasks" + (f" in state {', '.join(states)}" if states else ""), style="dim")
        return
    stdout_console().print(tasks_table(found))


@click.command()
@connection_options
def workers(flags: ConnectionFlags) -> None:
    """List the workers: roles, capacity, busy, status, last heartbeat, host/pid (needs MongoDB only).

    A worker with no heartbeat for 3 intervals (FLOWKIT_WORKER_HB_INTERVAL_SEC) shows as stale.
    """
    settings = flags.load(ClientSettings)
    _quiet_client_logs()

    async def read() -> list[dict[str, Any]]:
        async with open_client(settings, kafka=False) as client:
            return await client.workers()

    found = run_async(read())
    if not found:
        stderr.print("no workers have registered", style="dim")
        return
    stdout_console().print(workers_table(found, time.time(), _heartbeat_interval(flags)))


def _heartbeat_interval(flags: ConnectionFlags) -> float:
    """The installation's worker heartbeat interval as this environment (or --config) sets it."""
    try:
        return WorkerConfig.load(flags.config_file).hb_interval_sec
    except ConfigError:
        return float(WorkerConfig.model_fields["hb_interval_sec"].default)


COMMANDS = [coordinator, worker, submit, status, watch, cancel, tasks, workers]
"""Added to ``flowkit`` by :mod:`flowkit.cli`."""
