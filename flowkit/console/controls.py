"""Client commands that steer a task of a distributed installation from any machine:
``flowkit suspend``, ``resume``, ``retry`` and ``delete`` (the operator's ``spec.suspend``,
``spec.retry`` and FlowTask deletion do the same)."""

from __future__ import annotations

import logging

import click

from ..errors import FlowKitError
from .client import open_client
from .connection import ClientSettings
from .flags import ConnectionFlags, connection_options, run_async
from .logs import configure_logging
from .messages import fail, stderr


def _settings(flags: ConnectionFlags) -> ClientSettings:
    configure_logging(stderr, logging.ERROR)  # errors reach the user as one line of ours
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return flags.load(ClientSettings)


def _suspend(flags: ConnectionFlags, task_id: str, suspended: bool) -> None:
    settings = _settings(flags)

    async def request() -> str:
        async with open_client(settings, kafka=True) as client:
            return (await client.suspend(task_id, suspended)).status.value

    state = run_async(request())
    verb = "suspend" if suspended else "resume"
    if state in ("finished", "failed", "cancelled"):
        click.echo(f"task {task_id} has already ended ({state}): nothing to {verb}")
    elif suspended:
        click.echo(f"suspend requested: task {task_id} starts no new node; running ones finish")
    else:
        click.echo(f"resume requested: task {task_id} starts the nodes it held back")


@click.command()
@click.argument("task_id")
@connection_options
def suspend(flags: ConnectionFlags, task_id: str) -> None:
    """Hold TASK_ID's new nodes back (running nodes finish) until `flowkit resume`."""
    _suspend(flags, task_id, True)


@click.command()
@click.argument("task_id")
@connection_options
def resume(flags: ConnectionFlags, task_id: str) -> None:
    """Start the nodes that `flowkit suspend` held back."""
    _suspend(flags, task_id, False)


@click.command()
@click.argument("task_id")
@connection_options
def retry(flags: ConnectionFlags, task_id: str) -> None:
    """Run a failed or cancelled TASK_ID again from its unfinished nodes (finished ones keep
    their results)."""
    settings = _settings(flags)

    async def request() -> list[str]:
        async with open_client(settings, kafka=True) as client:
            return await client.retry(task_id)

    try:
        again = run_async(request())
    except FlowKitError as exc:
        fail(str(exc))
    click.echo(f"task {task_id} reopened: {len(again)} node(s) run again ({', '.join(again)})")


@click.command()
@click.argument("task_id")
@click.option(
    "--cancel",
    "cancel_timeout",
    type=click.FloatRange(min=0),
    default=None,
    flag_value=30.0,
    is_flag=False,
    help="Cancel a running task first and wait up to this many seconds (default 30) for it to stop.",
)
@connection_options
def delete(flags: ConnectionFlags, task_id: str, cancel_timeout: float | None) -> None:
    """Remove TASK_ID with its artifacts, batch records, checkpoints and runs (an ended task;
    a running one with --cancel)."""
    settings = _settings(flags)

    async def request() -> bool:
        async with open_client(settings, kafka=True) as client:
            return await client.delete(task_id, cancel_timeout)

    try:
        deleted = run_async(request())
    except FlowKitError as exc:
        fail(str(exc))
    if not deleted:
        fail(f"no task {task_id}")
    click.echo(f"task {task_id} deleted")


COMMANDS = [suspend, resume, retry, delete]
"""Added to ``flowkit`` by :mod:`flowkit.cli`."""
