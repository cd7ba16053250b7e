"""`vitals serve`: run the gateway until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from typing import TYPE_CHECKING, Any

from gateway.cli.common import add_config_options, run, settings_from
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["CannotListen", "probe_listen", "register", "serve_settings"]

log = logging.getLogger("gateway")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    add_config_options(p)
    p.add_argument("--host", help="listen address (setting host)")
    p.add_argument("--port", type=int, help="listen port (setting port)")
    p.add_argument("--rules", dest="rules_file", metavar="FILE", help="alert rules TOML file")
    p.add_argument("--certfile", metavar="PEM", help="TLS certificate chain (serve https/wss)")
    p.add_argument("--keyfile", metavar="PEM", help="TLS private key")
    p.add_argument(
        "--fhir-export-readings-per-s",
        type=float,
        metavar="N",
        help="readings/s all FHIR export downloads encode together, 0 = unpaced"
        " (setting fhir_export_readings_per_s)",
    )
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=["text", "json"], help="text (default) or JSON lines")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    tune_interpreter()
    try:
        run(serve(settings))
    except CannotListen as e:
        print(f"vitals serve: {e}", file=sys.stderr)
        return 1
    return 0


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings `vitals serve` runs with: its flags over the other sources."""
    return settings_from(
        args,
        host=args.host,
        port=args.port,
        rules_file=args.rules_file,
        certfile=args.certfile,
        keyfile=args.keyfile,
        log_level=args.log_level,
        log_format=args.log_format,
        fhir_export_readings_per_s=args.fhir_export_readings_per_s,
    )


class CannotListen(Exception):
    """The listening socket cannot be opened (port taken, no permission, no such address)."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        # asyncio and uvloop wrap the OS's words in their own: keep just those words.
        reason = os.strerror(error.errno).lower() if error.errno else str(error.strerror)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot listen on {where}: {reason}")


def probe_listen(host: str, port: int) -> None:
    """CannotListen unless every address of `host` can be bound at `port`, as the
    server will bind them (SO_REUSEADDR, IPv6 only on IPv6). The probe sockets never
    listen, so closing them leaves the port free at once."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise CannotListen(host, port, OSError(None, e.strerror)) from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                raise CannotListen(host, port, e) from None


def tune_interpreter() -> None:
    """For a process that is one busy event loop beside the SQLite writer thread."""
    # The writer thread must win the GIL back from the event loop after every statement
    # it runs in SQLite's C code; at the default 5 ms switch interval it waits for it
    # (bench/: ward ack p99 about 100 ms instead of 70, ingest some 5 % slower).
    sys.setswitchinterval(0.0005)
    # Each batch allocates a few dozen objects that live until its commit, hundreds of
    # milliseconds under load: at the default thresholds (700, 10, 10) the collector
    # keeps sweeping every connection's objects: ingest at 2,000 devices ran about 25 %
    # faster without that (bench/). Readings hold no reference cycles; the
    # rare cyclic garbage of a closed connection just waits longer.
    gc.set_threshold(100_000, 50, 100)


async def serve(settings: Settings) -> None:
    # Imported here: every `vitals` command builds this parser, only `serve` needs the app.
    from aiohttp import web

    from gateway.app import create_app

    # Both before the app starts (database, writer thread, log lines): a bad file or a
    # taken port is one line on stderr.
    tls = tls_context(settings)
    probe_listen(settings.host, settings.port)
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_s,
        # aiohttp closes a connection that sends no complete request within this
        # (from its start, and between keep-alive requests); upgraded streams are busy.
        keepalive_timeout=settings.auth_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
    try:
        await site.start()
    except OSError as e:
        # The app has started (database, writer thread): stop it, or it keeps us alive.
        await runner.cleanup()
        raise CannotListen(settings.host, settings.port, e) from None
    scheme = "https" if tls else "http"
    log.info(
        "vitals gateway listening on %s://%s:%d as replica %s",
        scheme,
        settings.host,
        settings.port,
        settings.replica,
    )
    log.info("database %s", _redact(settings.database_url))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        task = asyncio.create_task(_reload_rules(app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await stop.wait()
        log.info("shutting down: closing streams, committing what was received")
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), settings.shutdown_grace_s)
        except TimeoutError:
            # The database is stuck (e.g. another process holds its lock): leave now.
            # Nothing is lost by it: every ack followed a commit, and what was not
            # acked will be resent by its device.
            log.error(
                "shutdown took longer than shutdown_grace_s (%.1f s): exiting with "
                "unacknowledged batches unstored",
                settings.shutdown_grace_s,
            )
            logging.shutdown()
            os._exit(1)  # threads blocked in the database driver cannot be joined
    log.info("stopped")


async def _reload_rules(app: web.Application) -> None:
    """SIGHUP: reload the alert rules file, for every replica; a bad file (or a database
    that refuses it) is refused and the old rules stay, everywhere."""
    from gateway.core.rules import RulesError
    from gateway.errors import StorageError
    from gateway.http.keys import RULES

    try:
        await app[RULES].reload()
    except (RulesError, StorageError) as e:
        log.error("rules reload refused, previous rules stay in force: %s", e)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain http. ConfigError if half-configured."""
    if not settings.certfile and not settings.keyfile:
        return None
    if not (settings.certfile and settings.keyfile):
        raise ConfigError("TLS needs both certfile and keyfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {settings.certfile}: {e}") from e
    return context


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
