"""Logging for the command: library warnings through rich on stderr, above any live display."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler


def configure_logging(console: Console, level: int = logging.WARNING) -> None:
    """Send the ``flowkit`` loggers to ``console`` at ``level``; leaves other loggers alone.

    Printing through the same Console a ``rich.live.Live`` uses keeps log lines above
    the live table instead of tearing through it.
    """
    handler = RichHandler(
        console=console, show_time=False, show_path=False, markup=False, rich_tracebacks=True
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("flowkit")
    for old in list(logger.handlers):
        if isinstance(old, RichHandler):
            logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
