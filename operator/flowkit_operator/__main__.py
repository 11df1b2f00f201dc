"""`flowkit-operator`: run the operator until SIGTERM (settings from the environment, docs/operator.md)."""

from __future__ import annotations

import asyncio
import logging
import sys

from flowkit.errors import ConfigError

from .config import OperatorConfig


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        cfg = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .app import run

    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
