"""`vitals simulate`: the simulator's command line.

The gateway's `vitals` CLI finds `register` through the `vitals.commands` entry point
(pyproject.toml), so neither package imports the other; `python -m devices` offers the
same subcommand for debugging.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tomllib
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from devices.errors import SimulatorError, TokensFileError
from devices.scenarios import available_scenarios, load_scenario
from devices.simulator import SimulationConfig, read_tokens_file, simulate

__all__ = ["DEFAULT_URL", "config_from_args", "register", "run_simulate"]

DEFAULT_URL = "http://127.0.0.1:8080"
_EXIT_USAGE = 2
_HANDLER_NAME = "vitals-simulate"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulate` subcommand; its handler returns the exit code."""
    shipped = ", ".join(sorted(available_scenarios())) or "none found"
    parser = subparsers.add_parser(
        "simulate",
        help="stream simulated vital signs from many devices to a gateway",
        description=(
            "Provision N simulated wearables (or take them from a tokens file) and stream "
            "realistic vitals with scenario episodes until --duration ends or Ctrl-C. "
            "Exit codes: 0 done, 1 refused or unreachable, 2 bad arguments, 130 Ctrl-C."
        ),
    )
    parser.add_argument(
        "--url", help=f"gateway base URL (default: from --config, else {DEFAULT_URL})"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the gateway's TOML settings file: the URL is taken from its host and port",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="admin token to provision devices with (default: $VITALS_TOKEN)",
    )
    source.add_argument(
        "--tokens",
        metavar="FILE",
        type=Path,
        help='JSON lines {"id","patient_id","ward","token"}, as `vitals devices add --json` '
        "prints: use these devices instead of provisioning",
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        metavar="N",
        help="number of devices (default 10; with --tokens, every device in the file)",
    )
    parser.add_argument(
        "--rate", type=_positive_float, default=1.0, help="batches per second per device (1)"
    )
    parser.add_argument(
        "--duration",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="stop after this long, provisioning included (0: until Ctrl-C)",
    )
    parser.add_argument("--seed", type=int, help="same seed, same readings (default: random)")
    parser.add_argument("--msgpack", action="store_true", help="send MessagePack binary frames")
    parser.add_argument(
        "--scenario",
        default="default",
        metavar="NAME|PATH",
        help=f"scenario name or TOML file (shipped: {shipped}; default %(default)s)",
    )
    parser.add_argument("--ward", default="icu", help="ward of provisioned devices (%(default)s)")
    parser.add_argument("--patient-prefix", default="p-", help="patient ids (%(default)s001…)")
    parser.add_argument("--device-prefix", default="watch-", help="device ids (%(default)s001…)")
    parser.add_argument(
        "--acked-log",
        type=Path,
        metavar="FILE",
        help='write a JSON line {"device_id","seq","n","first_ts","last_ts","via"} per '
        "batch known to be stored",
    )
    parser.add_argument(
        "--save-tokens",
        type=Path,
        metavar="FILE",
        help="write provisioned devices as a --tokens file, to reuse them later",
    )
    parser.add_argument(
        "--buffer",
        type=_positive_int,
        default=600,
        metavar="BATCHES",
        help="unacked batches kept per device; when full the oldest is dropped (%(default)s)",
    )
    parser.add_argument(
        "--drain",
        type=_non_negative_float,
        default=2.0,
        metavar="SECONDS",
        help="at the end, wait this long for outstanding acks (%(default)s)",
    )
    parser.add_argument(
        "--cafile", type=Path, metavar="PEM", help="CA certificate(s) to trust for https/wss"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    parser.set_defaults(func=run_simulate)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit 1: a reader that has seen enough (`| head -1`) is no failure;
        # the `vitals` command ends quietly on BrokenPipeError.
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def run_simulate(args: argparse.Namespace) -> int:
    """The `simulate` handler: build the configuration, run, return the exit code."""
    console = _Console()
    _configure_logging(console, verbose=args.verbose)
    try:
        config = config_from_args(args)
    except SimulatorError as exc:
        print(f"vitals simulate: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    return simulate(config, console)


def url_from_config(path: Path | None) -> str:
    """The gateway's URL from its settings file (read as TOML: this package never
    imports the gateway), or the default URL."""
    if path is None:
        return DEFAULT_URL
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SimulatorError(f"{path}: cannot read the gateway settings: {e}") from e
    scheme = "https" if data.get("certfile") else "http"
    return f"{scheme}://{data.get('host', '127.0.0.1')}:{data.get('port', 8080)}"


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """The run's configuration from parsed `simulate` arguments; `SimulatorError` if unusable."""
    scenario = load_scenario(args.scenario)
    credentials = None
    admin_token = None
    if args.tokens is not None:
        credentials = read_tokens_file(args.tokens)
        if args.devices is not None:
            if args.devices > len(credentials):
                raise TokensFileError(
                    f"{args.tokens}: --devices {args.devices}, but the file has only "
                    f"{len(credentials)}"
                )
            credentials = credentials[: args.devices]
    else:
        admin_token = args.admin_token or os.environ.get("VITALS_TOKEN")
        if not admin_token:
            raise SimulatorError("need --admin-token, --tokens FILE or $VITALS_TOKEN")
    return SimulationConfig(
        url=args.url or url_from_config(args.config),
        scenario=scenario,
        admin_token=admin_token,
        credentials=tuple(credentials) if credentials is not None else None,
        devices=args.devices or 10,
        rate=args.rate,
        duration=args.duration or None,
        seed=args.seed,
        encoding="msgpack" if args.msgpack else "json",
        ward=args.ward,
        patient_prefix=args.patient_prefix,
        device_prefix=args.device_prefix,
        buffer=args.buffer,
        acked_log=args.acked_log,
        save_tokens=args.save_tokens,
        drain_timeout=args.drain,
        cafile=args.cafile,
    )


def _configure_logging(console: Console, *, verbose: bool) -> None:
    # Our own logger only: the host CLI (or a test) may have configured the root logger.
    logger = logging.getLogger("devices")
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    handler: logging.Handler
    if console.is_terminal:
        # Through the live display's console, so log lines print above the table.
        handler = RichHandler(console=console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.set_name(_HANDLER_NAME)  # so a rerun in the same process replaces it
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return value
