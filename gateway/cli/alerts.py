"""`vitals alerts`: the alerts stored by a running gateway, from `GET /v1/alerts`.

A one-shot listing for a shift report or a script; `vitals watch` is the live view.
Exit codes as `vitals query`: 0 done, 1 gateway unreachable or failing, 2 bad request,
3 missing, unknown or insufficient token.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from gateway.cli.common import add_rest_client_options, run
from gateway.client.output import add_json_option, console_for, show
from gateway.client.rest import (
    Failed,
    base_url,
    gateway_session,
    get_model,
    token_of,
)
from gateway.watch.render import fitted_table
from gateway.watch.state import AlertRow
from schemas.codes import AlertStatus
from schemas.dashboard import AlertList

__all__ = ["register"]

_LIST = TypeAdapter(AlertList)
_MAX_LIMIT = 10_000  # the gateway's own bound on one answer


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "alerts",
        help="list the alerts stored by a running gateway",
        description="List alerts (open and closed) from a running gateway over HTTP.",
    )
    add_rest_client_options(p)
    p.add_argument("--status", choices=[s.value for s in AlertStatus], help="only this status")
    p.add_argument("--patient", metavar="ID", help="only this patient's alerts")
    p.add_argument(
        "--limit",
        type=int,
        default=1000,
        metavar="N",
        help=f"at most N alerts, those changed longest ago first (1..{_MAX_LIMIT}; 1000)",
    )
    add_json_option(p, "alert")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= _MAX_LIMIT:
        print(f"vitals alerts: --limit must be within 1..{_MAX_LIMIT}", file=sys.stderr)
        return 2
    try:
        alerts = run(_fetch(args, base_url(args), token_of(args)))
    except Failed as e:
        print(f"vitals alerts: {e}", file=sys.stderr)
        return e.code
    now = datetime.now(UTC)
    # event_id 0: the REST answer has no per-alert event id, and the table shows none.
    rows = [AlertRow.at(a, 0, now) for a in alerts.items]
    title = f"Alerts (last event {alerts.last_event_id})"
    show(fitted_table(rows, console_for(), title=title), alerts.items, json=args.json)
    if len(alerts.items) == args.limit:
        print(f"vitals alerts: showing the first {args.limit}; pass --limit for more",
              file=sys.stderr)  # fmt: skip
    return 0


async def _fetch(args: argparse.Namespace, base: str, token: str) -> AlertList:
    params = {"limit": str(args.limit)}
    if args.status:
        params["status"] = args.status
    if args.patient:
        params["patient_id"] = args.patient
    async with gateway_session(base, token, args.cafile) as http:
        return await get_model(http, f"{base}/v1/alerts", params, _LIST)
