"""`python -m devices simulate …`: the `vitals simulate` subcommand without the gateway's CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devices.cli import register

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devices")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
