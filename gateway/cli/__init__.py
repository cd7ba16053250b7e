"""The `vitals` command line: one subcommand per module, each with `register(subparsers)`.

Client-side subcommands from other packages (the simulator) plug in through the
`vitals.commands` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version

from gateway.errors import GatewayError
from gateway.logs import configure_logging

__all__ = ["build_parser", "main"]

# Our own subcommand modules, in the order `vitals --help` lists them.
_COMMANDS = ("serve", "admin", "db", "query", "alerts", "report", "demo", "cluster", "watch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitals",
        description="vitals-gateway: telemetry gateway for wearable vital-sign monitors",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"gateway.cli.{name}").register(sub)
    for ep in entry_points(group="vitals.commands"):
        ep.load()(sub)
    return parser


def _version() -> str:
    try:
        return version("vitals-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> None:
    configure_logging("INFO")
    args = build_parser().parse_args(argv)
    name = " ".join(["vitals", args.command, *filter(None, [getattr(args, "action", None)])])
    try:
        code = args.func(args)
        # Inside the try: a pipe's reader may leave before the last buffered line.
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()
        code = 0
    except GatewayError as e:
        print(f"{name}: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _stdout_gone() -> None:
    """The reader of stdout went away (`vitals … | head -1`): that is its right, not an
    error. Python would still try to flush stdout at exit and print "Exception ignored";
    pointing the descriptor at /dev/null lets it (docs: "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
