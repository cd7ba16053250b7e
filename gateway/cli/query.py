"""`vitals query`: read stored readings (or summaries) from a running gateway.

Talks to the gateway over HTTP only, following cursors to the end. Exit codes: 0 done,
1 gateway unreachable or failing, 2 bad request (the gateway's detail is printed),
3 missing, unknown or insufficient token.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from pydantic import TypeAdapter
from rich.table import Table

from gateway.cli.common import add_rest_client_options, run
from gateway.client.output import print_json_lines, print_table
from gateway.client.rest import (
    DEFAULT_URL,
    EXIT_BAD_REQUEST,
    Failed,
    base_url,
    checked,
    gateway_session,
    get_model,
    token_of,
)
from gateway.http.params import duration_us
from schemas.api import ReadingsPage, Summary
from schemas.metrics import Metric

__all__ = ["DEFAULT_URL", "register", "resolve_time"]

_PAGE = TypeAdapter(ReadingsPage)
_SUMMARY = TypeAdapter(Summary)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "query",
        help="query stored readings from a running gateway",
        description="Query readings (or per-bucket summaries) from a running gateway over HTTP.",
    )
    add_rest_client_options(p)
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
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        default="table",  # argparse takes the first action's default for a shared dest
        help="one JSON object per line instead of a table (same as --format json)",
    )
    out.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (default; tab-separated when piped), csv, or json (one object per line)",
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
        raise Failed(f"{text!r} reaches back before year 1", EXIT_BAD_REQUEST) from None


def _main(args: argparse.Namespace) -> int:
    if args.bucket is not None and not args.summary:
        return _fail("--bucket needs --summary", EXIT_BAD_REQUEST)
    if args.limit_per_page < 1:
        return _fail("--limit-per-page must be at least 1", EXIT_BAD_REQUEST)
    try:
        token = token_of(args)
        base = base_url(args)
        run(_query(args, base, token))
    except Failed as e:
        return _fail(str(e), e.code)
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
    async with gateway_session(base, token, args.cafile) as http:
        if args.summary:
            params["bucket"] = args.bucket or "60s"
            await _summary(http, base, params, args.format)
        elif args.format == "csv":
            await _readings_csv(http, base, params)
        else:
            await _readings(http, base, params, args.limit_per_page, args.format)


async def _readings(
    http: aiohttp.ClientSession, base: str, params: dict[str, str], per_page: int, fmt: str
) -> None:
    # A table is laid out once all its rows are known: the only output held in memory.
    table = _readings_table(params) if fmt == "table" else None
    query = {**params, "limit": str(per_page)}
    while True:
        page = await get_model(http, f"{base}/v1/readings", query, _PAGE)
        if table is None:
            print_json_lines(page.items)
        else:
            for r in page.items:
                device = [r.device_id] if "patient_id" in params else []
                table.add_row(_ts(r.ts), *device, r.metric.value, f"{r.value:g}", r.unit)
        if page.next_cursor is None:
            break
        query["cursor"] = page.next_cursor
    if table is not None:
        print_table(table)


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


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def _readings_csv(http: aiohttp.ClientSession, base: str, params: dict[str, str]) -> None:
    """The gateway's own CSV export, copied through as it arrives."""
    query = {**params, "format": "csv"}
    async with http.get(f"{base}/v1/readings", params=query) as response:
        await checked(response)
        async for chunk in response.content.iter_chunked(64 * 1024):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


async def _summary(
    http: aiohttp.ClientSession, base: str, params: dict[str, str], fmt: str
) -> None:
    summary = await get_model(http, f"{base}/v1/readings/summary", params, _SUMMARY)
    rows = [(_ts(b.start), b.count, b.min, b.max, b.mean) for b in summary.buckets]
    if fmt == "json":
        print_json_lines(summary.buckets)
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
        print_table(table)
