"""Sysctls a service changes: recorded once before it changes them, restored at `down`.

Each user keeps its record under its own state key. A record left by a killed run is
never overwritten by the next `up`: it holds the original values. Sysctls that do not
exist (e.g. the bridge-nf ones while br_netfilter is not loaded) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .common import Context


def _path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read(name: str) -> str | None:
    try:
        return _path(name).read_text().strip()
    except OSError:
        return None


def set_if_present(name: str, value: str) -> None:
    """Write `value` unless the sysctl is missing or already has it."""
    if read(name) not in (None, value):
        _path(name).write_text(value + "\n")


def record(ctx: Context, key: str, names: Iterable[str]) -> None:
    """Remember the current values unless a previous (maybe killed) run already did."""
    if ctx.get(key):
        return
    ctx.put(key, {name: value for name in names if (value := read(name)) is not None})


def restore(ctx: Context, key: str) -> list[str]:
    """Put the recorded values back and drop the record; returns the problems."""
    recorded = ctx.get(key)
    problems: list[str] = []
    if isinstance(recorded, dict):
        for name, value in recorded.items():
            try:
                set_if_present(name, str(value))
            except OSError as exc:
                problems.append(f"could not restore {name}={value}: {exc}")
    if not problems:
        ctx.forget(key)
    return problems
