"""The watcher's screen, drawn with rich from an `AlertBoard` and a `Link`: no I/O here.

Priority is shown by colour and, for those who cannot rely on colour, by its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich import box
from rich.console import Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.watch.state import AlertBoard, AlertRow, Link, LinkState
from schemas.codes import AlertStatus
from schemas.dashboard import AlertOut

__all__ = [
    "PRIORITY_STYLE",
    "alerts_table",
    "format_age",
    "format_limit",
    "format_value",
    "screen",
    "status_line",
]

PRIORITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
# Short enough that the whole table fits an 80-column terminal.
_STATUS_TEXT = {
    AlertStatus.ACTIVE_UNACK: "active unack",
    AlertStatus.ACTIVE_ACK: "active acked",
    AlertStatus.CLEARED_UNACK: "cleared unack",
    AlertStatus.CLEARED_ACK: "closed",
}
_DIRECTION = {"below": "<", "above": ">"}
_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("ID", "right"),
    ("Priority", "left"),
    ("Patient", "left"),
    ("Ward", "left"),
    ("Metric", "left"),
    ("Last", "right"),
    ("Worst", "right"),
    ("Limit", "left"),
    ("Status", "left"),
    ("Age", "right"),
)
_LINK_STYLE = {
    LinkState.CONNECTING: "yellow",
    LinkState.CONNECTED: "green",
    LinkState.RECONNECTING: "bold yellow",
    LinkState.CLOSED: "dim",
}
_NONE = "-"


def format_value(value: float | None) -> str:
    return _NONE if value is None else f"{value:g}"


def format_limit(alert: AlertOut) -> str:
    """`<92`, `>130`, or `-` for an alert without a threshold (device offline)."""
    if alert.threshold is None:
        return _NONE
    value = format_value(alert.threshold)
    return value if alert.direction is None else _DIRECTION[alert.direction] + value


def format_age(seconds: float) -> str:
    """Two units at most: `45s`, `3m 05s`, `2h 07m`, `1d 03h`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def alerts_table(rows: Sequence[AlertRow], *, title: str | None = None) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box draws one space between columns
    )
    # Everything but the metric keeps its width: on a narrow terminal the metric name
    # is shortened, never the priority word or a value.
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True, overflow="fold")
    table.columns[4].overflow = "ellipsis"
    table.columns[4].no_wrap = False
    for row in rows:
        a = row.alert
        status = _STATUS_TEXT[a.status]
        table.add_row(
            str(a.id),
            a.priority.upper(),
            a.patient_id,
            a.ward,
            a.metric or a.rule,
            format_value(a.last_value),
            format_value(a.worst_value),
            format_limit(a),
            # Unacknowledged is what needs a clinician: make it stand out in any colour.
            Text(status, style="bold" if a.status.endswith("unack") else ""),
            format_age(row.age_s),
            style=PRIORITY_STYLE[a.priority],
        )
    return table


def status_line(link: Link, board: AlertBoard, now: datetime) -> Text:
    text = Text()
    if link.state is LinkState.RECONNECTING and link.retry_at is not None:
        wait = max(0, round((link.retry_at - now).total_seconds()))
        text.append(f"reconnecting in {wait}s", style=_LINK_STYLE[link.state])
    else:
        text.append(link.state.value, style=_LINK_STYLE[link.state])
    if link.problem:
        text.append(f" ({link.problem})", style="dim")
    text.append(f" · last event {board.last_event_id} · {len(board)} open")
    return text


def screen(board: AlertBoard, link: Link, now: datetime, *, ack_hint: bool) -> RenderableType:
    """The live view: the open-alerts table, the status line, the last notice."""
    rows = board.open_alerts(now)
    parts: list[RenderableType] = [
        alerts_table(rows, title="Open alerts") if rows else Text("No open alerts.", style="dim"),
        status_line(link, board, now),
    ]
    if link.notice:
        parts.append(Text(link.notice, style="italic"))
    if ack_hint:
        parts.append(Text("Type an alert id and Enter to acknowledge; Ctrl-C to quit.", "dim"))
    return Group(*parts)
