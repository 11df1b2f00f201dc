"""One measurement in a fresh process, with a deadline; its whole process tree ended after.

:func:`measure` runs ``fn(*args)`` in a spawned process and returns its figures. A
measurement that does not finish in time raises :class:`DidNotFinish`, one that fails
raises :class:`MeasurementFailed`; either way the process is stopped: SIGTERM first
(a measurement with processes of its own handles it: ``distributed.py`` cancels its
main task, so its ``finally`` blocks stop the coordinator and worker and drop their
database), then SIGKILL for whatever of its tree is still alive after a grace period. The measuring process
ignores SIGINT: Ctrl-C reaches the bench's own process, which stops it this same way.

Inside a measurement, :func:`note` sends a line of progress (e.g. "412/1,002 nodes
finished") that the bench shows while it runs and puts in the reason of a timeout.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil

GRACE_SEC = 90.0
"""How long a stopped measurement may take to clean up (it stops two processes, each
allowed 30 s, and drops a database) before its tree is killed."""

Figures = dict[str, float]

_context = multiprocessing.get_context("spawn")
_channel: multiprocessing.connection.Connection | None = None


class MeasurementError(Exception):
    """A measurement gave no figures; ``reason`` says why, for the table."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DidNotFinish(MeasurementError):
    pass


class MeasurementFailed(MeasurementError):
    pass


def note(text: str) -> None:
    """Progress of the running measurement (a no-op outside :func:`measure`)."""
    if _channel is not None:
        _channel.send(("note", text))


def _child(
    channel: multiprocessing.connection.Connection, fn: Callable[..., Figures], args: tuple[Any, ...]
) -> None:
    global _channel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _channel = channel
    try:
        result: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # every failure is a reason in the table
        result = ("error", f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
    with contextlib.suppress(OSError):  # the bench stopped listening: it stopped this run
        channel.send(result)


def measure(
    fn: Callable[..., Figures],
    args: tuple[Any, ...],
    timeout: float,
    on_note: Callable[[str], None] = lambda _: None,
) -> Figures:
    """``fn(*args)`` in a fresh process, within ``timeout`` seconds."""
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(target=_child, args=(sender, fn, args))
    process.start()
    sender.close()
    deadline = time.monotonic() + timeout
    last_note = ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                detail = f" ({last_note} when stopped)" if last_note else ""
                raise DidNotFinish(f"did not finish within {timeout:.0f} s{detail}")
            if not receiver.poll(min(left, 1.0)):
                continue
            try:
                kind, value = receiver.recv()
            except EOFError:
                process.join(5)
                raise MeasurementFailed(
                    f"the measuring process died (exit code {process.exitcode})"
                ) from None
            if kind == "note":
                last_note = value
                on_note(value)
            elif kind == "ok":
                return dict(value)
            else:
                raise MeasurementFailed(str(value))
    finally:
        receiver.close()
        end(process)


def end(process: multiprocessing.process.BaseProcess) -> None:
    """Stop ``process`` (SIGTERM, then a grace period) and kill what is left of its tree."""
    tree = _descendants(process.pid)
    if process.is_alive():
        process.terminate()
        process.join(GRACE_SEC)
    tree += _descendants(process.pid)
    if process.is_alive():
        process.kill()
        process.join()
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()  # psutil checks the pid still names the same process
    psutil.wait_procs(tree, timeout=10)


def _descendants(pid: int | None) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True) if pid else []
    except psutil.NoSuchProcess:
        return []
