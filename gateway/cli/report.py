"""`vitals report alarms`: the alarm-fatigue report of a running gateway, from
`GET /v1/reports/alarms`.

A table of the figures per rule and priority, per priority, and in all; on a terminal
its title gives the window and patient-days and its caption the longest unacknowledged
alert. `--json` prints the whole report as one JSON object. Exit codes as `vitals
alerts`: 0 done, 1 gateway unreachable or failing, 2 bad request, 3 missing, unknown or
insufficient token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import TypeAdapter
from rich import box
from rich.table import Table

from gateway.cli.common import add_rest_client_options, run
from gateway.client.output import add_json_option, show
from gateway.client.rest import Failed, base_url, gateway_session, get_model, token_of
from schemas.api import AlarmFigures, AlarmReport

__all__ = ["register"]

_REPORT = TypeAdapter(AlarmReport)
# Short headers: rules and priorities keep their whole names on a 100-column terminal.
_COLUMNS = (
    "Rule", "Priority", "Alerts", "/pt-day", "Acked", "Unacked",
    "p50 ack", "p90 ack", "Nuisance", "Silenced", "Escalated",
)  # fmt: skip


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "report",
        help="reports of a running gateway (alarms)",
        description="Reports computed by a running gateway, over HTTP.",
    )
    reports = p.add_subparsers(dest="report", required=True, metavar="REPORT")
    alarms = reports.add_parser(
        "alarms",
        help="alarm-fatigue report: alerts per patient-day, time to acknowledge, nuisance",
        description="Alerts per patient-day by rule and priority, time to acknowledge "
        "(p50/p90), nuisance alarms, silences, escalations and the longest "
        "unacknowledged alert, over the window ending now (GET /v1/reports/alarms).",
    )
    add_rest_client_options(alarms)
    alarms.add_argument(
        "--since", default="24h", metavar="DURATION", help="the window, like 24h or 7d (24h)"
    )
    alarms.add_argument("--ward", metavar="WARD", help="only this ward (default: all yours)")
    add_json_option(alarms, "report")
    alarms.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        report = run(_fetch(args, base_url(args), token_of(args)))
    except Failed as e:
        print(f"vitals report alarms: {e}", file=sys.stderr)
        return e.code
    show(report_table(report), [report], json=args.json)
    return 0


async def _fetch(args: argparse.Namespace, base: str, token: str) -> AlarmReport:
    params = {"since": args.since}
    if args.ward:
        params["ward"] = args.ward
    async with gateway_session(base, token, args.cafile) as http:
        return await get_model(http, f"{base}/v1/reports/alarms", params, _REPORT)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _cells(f: AlarmFigures) -> list[str]:
    return [
        str(f.alerts), _number(f.per_patient_day), str(f.acknowledged), str(f.unacknowledged),
        _number(f.ack_p50_s), _number(f.ack_p90_s), str(f.nuisance), str(f.silences),
        str(f.escalations),
    ]  # fmt: skip


def report_table(report: AlarmReport) -> Table:
    """One row per rule and priority, then one per priority and one for all alerts."""
    wards = "every ward" if report.wards is None else ", ".join(report.wards)
    title = (
        f"Alarms {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC, {wards}: "
        f"{report.patients} patients, {report.patient_days:g} patient-days; times in s"
    )
    longest = report.longest_unacknowledged
    caption = (
        "No alert in the window."
        if longest is None
        else f"Longest unacknowledged: alert {longest.alert_id} ({longest.rule}, "
        f"{longest.patient_id}, {longest.ward}), {longest.unacknowledged_s:g} s"
        + (", still open" if longest.still_open else "")
    )
    table = Table(
        title=title,
        caption=caption,
        title_justify="left",
        caption_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box draws one space between columns
    )
    rule_width = max((len(r.rule) for r in report.by_rule), default=5)
    for i, name in enumerate(_COLUMNS):
        table.add_column(
            name,
            justify="left" if i < 2 else "right",
            no_wrap=True,
            min_width=rule_width if i == 0 else 8 if i == 1 else None,
        )
    for r in report.by_rule:
        table.add_row(r.rule, r.priority, *_cells(r))
    for p in report.by_priority:
        table.add_row("(all)", p.priority, *_cells(p), style="bold")
    table.add_row("(all)", "(all)", *_cells(report.total), style="bold")
    return table
