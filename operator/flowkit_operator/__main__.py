"""`flowkit-operator`: run the operator (placeholder until the operator lands)."""

from __future__ import annotations

import sys


def main() -> int:
    print("flowkit-operator: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
