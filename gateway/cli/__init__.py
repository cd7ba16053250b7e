"""The `vitals` command line: one subcommand per module, each with `register(subparsers)`.

Client-side subcommands from other packages (the simulator) plug in through the
`vitals.commands` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from gateway.errors import GatewayError
from gateway.logs import configure_logging

__all__ = ["build_parser", "main"]

# Our own subcommand modules, in the order `vitals --help` lists them.
_COMMANDS = ("serve", "admin", "query", "demo", "watch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitals",
        description="vitals-gateway: telemetry gateway for wearable vital-sign monitors",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"gateway.cli.{name}").register(sub)
    for ep in entry_points(group="vitals.commands"):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    configure_logging("INFO")
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except GatewayError as e:
        print(f"vitals {args.command}: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
