"""`vitals watch`: a live table of open alerts from a running gateway's dashboard stream.

Argument handling and signals only; the watcher itself is `gateway.watch.client`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.common import add_config_options, run
from gateway.settings import load_settings
from gateway.watch.client import DEFAULT_URL, TRANSPORTS, WatchOptions, watch

__all__ = ["default_url", "register"]

TOKEN_ENV = "VITALS_TOKEN"
EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "watch",
        help="live table of open alerts; an alert id + Enter acknowledges it, s ID silences it",
        description="Watch a running gateway's open alerts live; acknowledge or silence by id.",
    )
    p.add_argument(
        "--url", help=f"gateway base URL (default {DEFAULT_URL}, or host/port of --config)"
    )
    p.add_argument("--token", help=f"clinician or admin token (default: ${TOKEN_ENV})")
    add_config_options(p, database=False)
    p.add_argument("--cafile", metavar="PEM", help="CA certificate(s) to trust for https/wss")
    p.add_argument("--once", action="store_true", help="print the open alerts once and exit")
    p.add_argument(
        "--json", action="store_true", help="print each alert event as one JSON line (for scripts)"
    )
    p.add_argument(
        "--since-event-id",
        type=_event_id,
        default=0,
        metavar="N",
        help="start after event N (default 0: the alerts open now)",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="ws",
        help="ws: the dashboard WebSocket, falling back to sse when it fails twice while the"
        " gateway answers HTTP (default); sse: Server-Sent Events; poll: long-polling (for"
        " proxies that strip Upgrade or buffer streams)",
    )
    p.set_defaults(func=_watch)


def _event_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not an event id: {text!r}")
    return value


def default_url(config: Path | None) -> str:
    """The gateway's URL as configured in `config` (its host and port), else the default."""
    if config is None:
        return DEFAULT_URL
    settings = load_settings(config)
    # A gateway listening on every address is reached on this machine's loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _watch(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"vitals watch: no token: pass --token or set {TOKEN_ENV}", file=sys.stderr)
        return EXIT_USAGE
    options = WatchOptions(
        url=args.url or default_url(args.config),
        token=token,
        since_event_id=args.since_event_id,
        once=args.once,
        json=args.json,
        cafile=args.cafile,
        transport=args.transport,
    )
    # Acknowledging needs someone at a keyboard: piped or closed stdin is never read.
    stdin = sys.stdin if not args.once and _is_tty(sys.stdin) else None
    return run(_main(options, stdin))


def _is_tty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and not stream.closed and bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


async def _main(options: WatchOptions, stdin: TextIO | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)  # Ctrl-C: close the socket, exit 0
    try:
        return await watch(options, stdout=sys.stdout, stderr=sys.stderr, stdin=stdin, stop=stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
