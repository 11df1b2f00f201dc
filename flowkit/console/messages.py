"""What the command tells its user outside the results: errors with their exit codes, graph
problems, and where tables go (stdout, at least 120 columns wide when it is not a terminal)."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from ..errors import GraphError
from ..graph import GraphSpec, load_graph_file, validate_graph

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True, soft_wrap=True)  # long error lines are not cut into pieces


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """``error: <message>`` on stderr, then exit with ``code``."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(code)


def graph_problems(exc: GraphError) -> NoReturn:
    """Every problem of an invalid graph, one a line, then exit 2."""
    noun = "problem" if len(exc.problems) == 1 else "problems"
    stderr.print(f"[bold red]invalid graph[/] ({len(exc.problems)} {noun}):", highlight=False)
    for problem in exc.problems:
        stderr.print(f"  - {escape(str(problem))}", highlight=False)
    sys.exit(EXIT_BAD_INPUT)


def load_spec(graph_file: str, roles: list[str] | None = None) -> GraphSpec:
    """The validated graph of ``graph_file``, or its problems and exit 2."""
    try:
        return validate_graph(load_graph_file(graph_file), roles=roles)
    except GraphError as exc:
        graph_problems(exc)


def stdout_console() -> Console:
    """A Console on stdout; a log file or pipe gets 120 columns instead of 80."""
    stdout = Console()
    if not stdout.is_terminal:
        stdout = Console(width=max(stdout.width, 120))
    return stdout
