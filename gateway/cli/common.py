"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.client.rest import DEFAULT_URL, TOKEN_ENV
from gateway.settings import Settings, load_settings

__all__ = ["add_config_options", "add_rest_client_options", "run", "settings_from"]

T = TypeVar("T")


def add_config_options(parser: argparse.ArgumentParser, *, database: bool = True) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="gateway TOML file (overrides shipped defaults)"
    )
    if database:
        parser.add_argument(
            "--database-url", metavar="URL", help="SQLAlchemy URL (setting database_url)"
        )


def add_rest_client_options(parser: argparse.ArgumentParser) -> None:
    """Where the gateway is and who asks: the options of every REST client command."""
    parser.add_argument(
        "--url", help=f"gateway base URL (default: from --config, else {DEFAULT_URL})"
    )
    parser.add_argument("--token", help=f"clinician or admin token (default: ${TOKEN_ENV})")
    add_config_options(parser, database=False)
    parser.add_argument("--cafile", metavar="PEM", help="CA certificate(s) to trust for https")


def settings_from(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings with precedence flag > environment > --config > shipped defaults."""
    if "database_url" not in flags:
        flags["database_url"] = getattr(args, "database_url", None)
    return load_settings(args.config, **flags)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the `speed` extra), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
