"""`scripts/testenv up|down|status|env|image`: one entry point for every test service.

Each service is a module exposing `NAME`, `up(ctx)`, `down(ctx)`, `status(ctx) -> str`
and `env(ctx) -> dict[str, str]`. `up` runs them in SERVICES order, `down` in reverse:
the network comes first and goes last, so nothing ever dials a pod or service address
that no local interface holds (TESTENV.md, "Network safety").
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from types import ModuleType

from .common import Context, TestenvError, say

# Module names under testenv_lib, in start order.
SERVICES = ["network", "kafka", "ferretdb", "tools", "cluster"]


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def _selected(names: list[str]) -> list[ModuleType]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise TestenvError(f"unknown service(s) {unknown}; choose from {SERVICES}")
    wanted = names or SERVICES
    return [_load(n) for n in SERVICES if n in wanted]


def cmd_up(ctx: Context, names: list[str]) -> None:
    for module in _selected(names):
        started = time.monotonic()
        module.up(ctx)
        say(f"{module.NAME} up ({time.monotonic() - started:.1f}s)")


def cmd_down(ctx: Context, names: list[str]) -> None:
    errors: list[str] = []
    for module in reversed(_selected(names)):
        try:
            module.down(ctx)
        except Exception as exc:  # keep tearing down the rest, report at the end
            errors.append(f"{module.NAME}: {exc}")
    if errors:
        raise TestenvError("down left problems:\n" + "\n".join(errors))


def cmd_status(ctx: Context, names: list[str]) -> None:
    for module in _selected(names):
        print(f"{module.NAME:10} {module.status(ctx)}")


def cmd_env(ctx: Context, names: list[str]) -> None:
    for module in _selected(names):
        for key, value in module.env(ctx).items():
            print(f"export {key}={shlex.quote(value)}")
    # The tools linked into bin_dir (helm, kubectl) go in front of the caller's PATH.
    if ctx.bin_dir.is_dir() and any(ctx.bin_dir.iterdir()):
        print(f'export PATH={shlex.quote(str(ctx.bin_dir))}:"$PATH"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/testenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("up", "down", "status", "env"):
        p = sub.add_parser(command)
        p.add_argument("services", nargs="*", help=f"subset of {SERVICES} (default: all)")
    restart = sub.add_parser("restart", help="crash a server and start it again, keeping its data (tests)")
    restart.add_argument("services", nargs="+", choices=["kafka", "ferretdb"])
    image = sub.add_parser("image", help="build or load images into the node's containerd")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    build = image_sub.add_parser("build")
    build.add_argument("--tag", default="flowkit:dev")
    build.add_argument("dockerfile", nargs="?", default="Dockerfile")
    load = image_sub.add_parser("load")
    load.add_argument("archive")
    image_sub.add_parser("bundled", help="build the bundled Kafka and FerretDB images; print chart values")
    args = parser.parse_args(argv)

    ctx = Context.from_env()
    try:
        if args.command == "restart":
            for name in args.services:
                started = time.monotonic()
                _load(name).restart(ctx)
                say(f"{name} restarted ({time.monotonic() - started:.1f}s)")
        elif args.command == "image":
            images = _load("image")
            if args.image_command == "build":
                images.build(ctx, args.dockerfile, args.tag)
            elif args.image_command == "bundled":
                print(json.dumps(_load("bundled_images").chart_values(ctx), indent=2))
            else:
                images.load(ctx, args.archive)
        else:
            {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}[args.command](
                ctx, args.services
            )
    except TestenvError as exc:
        print(f"testenv: error: {exc}", file=sys.stderr)
        return 1
    return 0
