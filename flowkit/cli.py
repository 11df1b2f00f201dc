"""The ``flowkit`` command: a thin shell over the library.

::

    flowkit run examples/etl/pipeline.yaml --handlers examples.etl.handlers:HANDLERS
    flowkit validate pipeline.yaml --roles extractor,transformer
    flowkit graph pipeline.yaml --format svg -o pipeline.svg

and, on a distributed installation (MongoDB and Kafka), the commands of
:mod:`flowkit.console.distributed`: ``coordinator``, ``worker``, ``submit``, ``status``,
``watch``, ``cancel``, ``tasks``, ``workers``; ``suspend``, ``resume``, ``retry``, ``delete``.

Exit codes: 0 the task finished; 1 it failed, was cancelled or timed out; 2 bad input
(invalid graph, bad ``--handlers`` or ``--param``, MongoDB or Kafka unreachable); 130
interrupted with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from .console import controls, distributed
from .console.inputs import load_handlers, parse_params
from .console.logs import configure_logging
from .console.messages import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    fail,
    graph_problems,
    load_spec,
    stderr,
    stdout_console,
)
from .console.progress import ChangeLog, ProgressView, summary_table
from .console.session import RunOutcome, run_task
from .embedded import DEFAULT_CONCURRENCY
from .errors import ConfigError, GraphError
from .graph import COORDINATOR_FN, GraphSpec
from .render import RenderError, svg_to_png, to_mermaid, to_svg
from .states import NodeStatus, State, TaskStatus


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowkit")
def main() -> None:
    """FlowKit: run, check and draw DAG workflows, alone or on a distributed installation."""


for _command in [*distributed.COMMANDS, *controls.COMMANDS]:
    main.add_command(_command)


@main.command()
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option(
    "--handlers",
    "handlers_spec",
    required=True,
    metavar="MODULE:ATTR",
    help="A dict mapping role → Handler instance, e.g. examples.etl.handlers:HANDLERS "
    "(MODULE is imported from the current directory).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task parameter (repeatable); VALUE is JSON if it parses, else a string.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the final status as JSON on stdout.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Concurrent node runs per role.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Cancel the task if it has not ended by then (exit 1).",
)
@click.option(
    "--graph-svg",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Also write the graph, coloured by final node states, as SVG.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log the engine's info messages too.")
def run(
    graph_file: str,
    handlers_spec: str,
    params: tuple[str, ...],
    as_json: bool,
    concurrency: int,
    timeout: float | None,
    graph_svg: str | None,
    verbose: bool,
) -> None:
    """Run GRAPH_FILE (YAML or JSON) in this process: embedded coordinator, workers and store."""
    person = stderr.is_terminal
    quiet = as_json and not person
    if not person:  # CI logs and pipes: keep log lines whole instead of 80 columns
        stderr.width = max(stderr.width, 120)
    # Node failures are shown in the summary; the engine's own warnings about them would
    # only repeat it, so they appear with -v.
    configure_logging(stderr, logging.INFO if verbose and not quiet else logging.ERROR)
    logging.getLogger("flowkit.cli").setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        handlers = load_handlers(handlers_spec)
        task_params = parse_params(params)
    except ConfigError as exc:
        fail(str(exc))
    spec = load_spec(graph_file, roles=list(handlers))
    outcome = _run_with_display(spec, handlers, task_params, concurrency, timeout, person, quiet)
    status = outcome.status
    if graph_svg:
        _write(graph_svg, _status_svg(spec, status), announce=not quiet)
    if as_json:
        click.echo(json.dumps(status.summary(), indent=2, default=str))
        if person:
            stderr.print(summary_table(status))
    else:
        stdout_console().print(summary_table(status))
    if outcome.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if outcome.timed_out:
        stderr.print(f"[red]timed out after {timeout}s; task cancelled[/]")
    sys.exit(0 if status.status == State.FINISHED else EXIT_FAILED)


def _run_with_display(
    spec: GraphSpec,
    handlers: dict[str, Any],
    params: dict[str, Any],
    concurrency: int,
    timeout: float | None,
    person: bool,
    quiet: bool,
) -> RunOutcome:
    view = ProgressView()
    changes = ChangeLog(stderr)

    def on_status(status: TaskStatus) -> None:
        if person:
            view.update(status)
        elif not quiet:
            changes.update(status)

    coroutine = run_task(
        spec, handlers, params, concurrency=concurrency, timeout=timeout, on_status=on_status
    )
    try:
        if person:
            with view.live(stderr):
                return asyncio.run(coroutine)
        return asyncio.run(coroutine)
    except GraphError as exc:
        graph_problems(exc)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


def _status_svg(spec: GraphSpec, status: TaskStatus) -> str:
    states = {nid: n.status.value for nid, n in status.nodes.items()}
    notes = {nid: _node_note(n) for nid, n in status.nodes.items()}
    return to_svg(spec, states, notes, title=f"task {status.task_id}: {status.status.value}")


def _node_note(node: NodeStatus) -> str:
    parts = [] if node.type == COORDINATOR_FN else [_plural(node.batches, "batch", "batches")]
    if node.attempts > 1:
        parts.append(_plural(node.attempts, "attempt", "attempts"))
    if node.error and node.status != State.FINISHED:
        parts.append(node.error.code)
    return " · ".join(parts)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _write(path: str, data: str | bytes, announce: bool = True) -> None:
    try:
        if isinstance(data, bytes):
            Path(path).write_bytes(data)
        else:
            Path(path).write_text(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    if announce:
        stderr.print(f"wrote {escape(path)}", style="dim", highlight=False)


@main.command()
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option(
    "--roles",
    default=None,
    metavar="A,B",
    help="Also check that every worker node's type is one of these roles.",
)
def validate(graph_file: str, roles: str | None) -> None:
    """Check GRAPH_FILE without running it; print every problem (exit 2) or OK."""
    role_list = [r.strip() for r in roles.split(",") if r.strip()] if roles is not None else None
    spec = load_spec(graph_file, roles=role_list)
    functions = sum(1 for n in spec.nodes if n.is_coordinator_fn)
    click.echo(
        f"OK: {graph_file} is a valid graph ({len(spec.nodes)} nodes, {len(spec.edges)} edges, "
        f"{functions} coordinator functions; roles: {', '.join(sorted(spec.roles)) or '-'})"
    )


@main.command()
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "svg", "png"]), default="mermaid", show_default=True
)
@click.option("-o", "--output", default=None, metavar="FILE", help="Write here instead of stdout.")
def graph(graph_file: str, fmt: str, output: str | None) -> None:
    """Draw GRAPH_FILE as Mermaid text, an SVG picture or (with cairosvg installed) a PNG."""
    spec = load_spec(graph_file)
    text = to_mermaid(spec) if fmt == "mermaid" else to_svg(spec, title=Path(graph_file).name)
    if fmt == "png":
        if output is None:
            fail("--format png needs -o FILE")
        try:
            _write(output, svg_to_png(text))
        except RenderError as exc:
            fail(str(exc))
        return
    if output is None:
        click.echo(text, nl=False)
    else:
        _write(output, text)


if __name__ == "__main__":
    main()
