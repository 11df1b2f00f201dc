"""Turning command-line text into library values: ``module:attr`` handlers and ``k=v`` params."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..worker.handlers.base import Handler

EXAMPLE_SPEC = "examples.etl.handlers:HANDLERS"


def load_handlers(spec: str, search_path: str | Path | None = None) -> dict[str, Handler]:
    """Import ``module:attr`` and check that it is a dict mapping role → Handler instance.

    ``search_path`` (default: the current directory) is put first on ``sys.path`` so a
    module next to the graph file imports as it would in ``python -c``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--handlers {spec!r}: expected MODULE:ATTR (e.g. {EXAMPLE_SPEC})")
    folder = str(Path(search_path or Path.cwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = _import(module_name, spec, folder)
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_") and isinstance(vars(module)[n], dict))
        hint = f" (dicts it defines: {', '.join(names)})" if names else ""
        raise ConfigError(f"--handlers {spec!r}: module '{module_name}' has no attribute '{attr}'{hint}")
    return check_handlers(getattr(module, attr), spec)


def _import(module_name: str, spec: str, folder: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"--handlers {spec!r}: cannot import module '{module_name}' ({exc}); "
                f"run from the folder that contains it (looked in {folder})"
            ) from None
        raise ConfigError(
            f"--handlers {spec!r}: importing '{module_name}' failed: {_last_frame(exc)}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"--handlers {spec!r}: importing '{module_name}' failed: {_last_frame(exc)}"
        ) from None


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def check_handlers(value: Any, spec: str) -> dict[str, Handler]:
    """``value`` must be a non-empty dict of role (str) → Handler instance."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"--handlers {spec!r}: must be a dict mapping role → Handler instance "
            f"(got {type(value).__name__})"
        )
    if not value:
        raise ConfigError(f"--handlers {spec!r}: the dict is empty; map each role to a Handler instance")
    for role, handler in value.items():
        if not isinstance(role, str):
            raise ConfigError(f"--handlers {spec!r}: role {role!r} must be a string")
        if inspect.isclass(handler) and issubclass(handler, Handler):
            raise ConfigError(
                f"--handlers {spec!r}: role '{role}' maps to the class {handler.__name__}; "
                f"pass an instance: {handler.__name__}()"
            )
        if not isinstance(handler, Handler):
            raise ConfigError(
                f"--handlers {spec!r}: role '{role}' maps to a {type(handler).__name__}, not a Handler "
                "instance (subclass flowkit.worker.handlers.base.Handler)"
            )
    return dict(value)


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    """``["day=2026-11-23", "limit=10"]`` → ``{"day": "2026-11-23", "limit": 10}``.

    A value that is valid JSON (number, true/false/null, list, object, quoted string)
    is taken as JSON; anything else is the literal string.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE (e.g. --param day=2026-11-23)")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params
