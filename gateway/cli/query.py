"""`vitals query`: read stored readings (or summaries) from a running gateway.

Talks to the gateway over HTTP only, following cursors to the end. Exit codes: 0 done,
1 gateway unreachable or failing, 2 bad request (the gateway's detail is printed),
3 missing, unknown or insufficient token.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from gateway.api.params import duration_us
from gateway.cli.common import add_config_options, client_tls, run
from gateway.settings import load_settings
from schemas.api import ErrorBody, ReadingOut, ReadingsPage, Summary, SummaryBucket
from schemas.metrics import Metric

__all__ = ["DEFAULT_URL", "register", "resolve_time"]

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_ENV = "VITALS_TOKEN"

EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2
EXIT_AUTH = 3

_ERROR = TypeAdapter(ErrorBody)
_PAGE = TypeAdapter(ReadingsPage)
_SUMMARY = TypeAdapter(Summary)
# A hanging gateway must not hang the CLI; a big CSV export may take long overall.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


class _Failed(Exception):
    """The command cannot go on: `message` for stderr, `code` for the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "query",
        help="query stored readings from a running gateway",
        description="Query readings (or per-bucket summaries) from a running gateway over HTTP.",
    )
    p.add_argument("--url", help=f"gateway base URL (default: from --config, else {DEFAULT_URL})")
    p.add_argument("--token", help=f"clinician or admin token (default: ${TOKEN_ENV})")
    add_config_options(p, database=False)
    p.add_argument("--cafile", metavar="PEM", help="CA certificate(s) to trust for https")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient", metavar="ID", help="readings of this patient")
    who.add_argument("--device", metavar="ID", help="readings from this device")
    p.add_argument("--metric", choices=[m.value for m in Metric])
    times = "RFC 3339 (2026-11-26T13:00:00Z) or a duration ago (90s, 15m, 1h, 2d)"
    p.add_argument("--since", metavar="TIME", help=f"from this time, included: {times}")
    p.add_argument("--until", metavar="TIME", help=f"to this time, excluded: {times}")
    p.add_argument(
        "--limit-per-page",
        type=int,
        default=1000,
        metavar="N",
        help="readings per request (json, table)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (default), csv, or json (one object per line)",
    )
    p.add_argument("--summary", action="store_true", help="per-bucket count/min/max/mean")
    p.add_argument("--bucket", metavar="SIZE", help="summary bucket: 60s, 5m, 1h… (default 60s)")
    p.set_defaults(func=_main)


def resolve_time(text: str, now: datetime) -> str:
    """RFC 3339 for the gateway: a duration means that long before `now`; anything else
    is passed on as given, for the gateway to accept or explain."""
    try:
        ago = timedelta(microseconds=duration_us(text))
        return (now - ago).isoformat().replace("+00:00", "Z")
    except ValueError:
        return text
    except OverflowError:
        raise _Failed(f"{text!r} reaches back before year 1", EXIT_BAD_REQUEST) from None


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config is None:
        return DEFAULT_URL
    settings = load_settings(args.config)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _main(args: argparse.Namespace) -> int:
    if args.bucket is not None and not args.summary:
        return _fail("--bucket needs --summary", EXIT_BAD_REQUEST)
    if args.limit_per_page < 1:
        return _fail("--limit-per-page must be at least 1", EXIT_BAD_REQUEST)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        return _fail(f"no token: pass --token or set {TOKEN_ENV}", EXIT_AUTH)
    base = _base_url(args)
    try:
        run(_query(args, base, token))
    except _Failed as e:
        return _fail(str(e), e.code)
    except BrokenPipeError:
        # The reader (`| head`) has seen enough; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _fail(message: str, code: int) -> int:
    print(f"vitals query: {message}", file=sys.stderr)
    return code


def _params(args: argparse.Namespace) -> dict[str, str]:
    now = datetime.now(UTC)
    given = {
        "patient_id": args.patient,
        "device_id": args.device,
        "metric": args.metric,
        "since": None if args.since is None else resolve_time(args.since, now),
        "until": None if args.until is None else resolve_time(args.until, now),
    }
    return {k: v for k, v in given.items() if v is not None}


async def _query(args: argparse.Namespace, base: str, token: str) -> None:
    params = _params(args)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        tls = client_tls(args.cafile)
        async with aiohttp.ClientSession(
            headers=headers, timeout=_TIMEOUT, connector=aiohttp.TCPConnector(ssl=tls)
        ) as http:
            if args.summary:
                params["bucket"] = args.bucket or "60s"
                await _summary(http, base, params, args.format)
            elif args.format == "csv":
                await _readings_csv(http, base, params)
            else:
                await _readings(http, base, params, args.limit_per_page, args.format)
    except aiohttp.InvalidURL as e:
        raise _Failed(f"not a usable --url: {e}", EXIT_BAD_REQUEST) from e
    except aiohttp.ClientPayloadError as e:
        raise _Failed(f"the gateway's answer was cut short: {e}", EXIT_FAILED) from e
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        reason = str(e) or type(e).__name__
        raise _Failed(f"cannot reach the gateway at {base}: {reason}", EXIT_FAILED) from e


async def _checked(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """The response if it succeeded; _Failed with the gateway's own words otherwise."""
    if response.status < 400:
        return response
    body = await response.read()
    try:
        error = _ERROR.validate_json(body)
        message = error.detail if error.param is None else f"{error.param}: {error.detail}"
    except ValidationError:
        message = body.decode(errors="replace")[:200] or response.reason or "no detail"
    match response.status:
        case 400:
            code = EXIT_BAD_REQUEST
        case 401 | 403:
            code = EXIT_AUTH
        case _:
            code = EXIT_FAILED
    raise _Failed(f"gateway answered {response.status}: {message}", code)


async def _readings(
    http: aiohttp.ClientSession, base: str, params: dict[str, str], per_page: int, fmt: str
) -> None:
    # A table is laid out once all its rows are known: the only output held in memory.
    table = _readings_table(params) if fmt == "table" else None
    query = {**params, "limit": str(per_page)}
    while True:
        async with http.get(f"{base}/v1/readings", params=query) as response:
            page = _PAGE.validate_json(await (await _checked(response)).read())
        if table is None:
            _print_json_lines(page.items)
        else:
            for r in page.items:
                device = [r.device_id] if "patient_id" in params else []
                table.add_row(_ts(r.ts), *device, r.metric.value, f"{r.value:g}", r.unit)
        if page.next_cursor is None:
            break
        query["cursor"] = page.next_cursor
    if table is not None:
        Console().print(table)


def _readings_table(params: dict[str, str]) -> Table:
    if "patient_id" in params:
        table = Table(title=f"patient {params['patient_id']}")
        columns = ["ts", "device", "metric", "value", "unit"]
    else:
        table = Table(title=f"device {params['device_id']}")
        columns = ["ts", "metric", "value", "unit"]
    for name in columns:
        table.add_column(name, justify="right" if name == "value" else "left", no_wrap=True)
    return table


def _print_json_lines(items: list[ReadingOut] | list[SummaryBucket]) -> None:
    sys.stdout.write("".join(item.model_dump_json() + "\n" for item in items))
    sys.stdout.flush()


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def _readings_csv(http: aiohttp.ClientSession, base: str, params: dict[str, str]) -> None:
    """The gateway's own CSV export, copied through as it arrives."""
    query = {**params, "format": "csv"}
    async with http.get(f"{base}/v1/readings", params=query) as response:
        await _checked(response)
        async for chunk in response.content.iter_chunked(64 * 1024):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


async def _summary(
    http: aiohttp.ClientSession, base: str, params: dict[str, str], fmt: str
) -> None:
    async with http.get(f"{base}/v1/readings/summary", params=params) as response:
        summary = _SUMMARY.validate_json(await (await _checked(response)).read())
    rows = [(_ts(b.start), b.count, b.min, b.max, b.mean) for b in summary.buckets]
    if fmt == "json":
        _print_json_lines(summary.buckets)
    elif fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(("start", "count", "min", "max", "mean"))
        out.writerows(rows)
    else:
        subject = (
            f"patient {params['patient_id']}"
            if "patient_id" in params
            else (f"device {params['device_id']}")
        )
        table = Table(title=f"{subject}: {params.get('metric', '')} per {params['bucket']}")
        for name in ("start", "count", "min", "max", "mean"):
            table.add_column(name, justify="left" if name == "start" else "right", no_wrap=True)
        for start, count, lo, hi, mean in rows:
            table.add_row(start, str(count), f"{lo:g}", f"{hi:g}", f"{mean:.6g}")
        Console().print(table)
