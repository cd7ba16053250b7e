"""The watcher's screen, drawn with rich from an `AlertBoard` and a `Link`: no I/O here.

What an alert is (its label), how urgent (its priority) and where its limit lies are
three columns, never one: "SpO₂ low", "HIGH", "< 92 %". Priority is shown by colour
and, for those who cannot rely on colour, by its name; an escalation in reverse video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from rich import box
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.watch.commands import COMMAND_HINT
from gateway.watch.state import AlertBoard, AlertRow, Link, LinkState
from schemas.codes import AlertStatus
from schemas.dashboard import AlertOut

__all__ = [
    "ESCALATED_STYLE",
    "PRIORITY_STYLE",
    "alerts_table",
    "fitted_table",
    "format_age",
    "format_escalation",
    "format_limit",
    "format_silence",
    "format_value",
    "screen",
    "status_line",
]

PRIORITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
# Unmistakable in colour and without it: reverse video survives a monochrome terminal.
ESCALATED_STYLE = "bold reverse red"
# Short enough that the whole table fits an 80-column terminal.
_STATUS_TEXT = {
    AlertStatus.ACTIVE_UNACK: "active unack",
    AlertStatus.ACTIVE_ACK: "active acked",
    AlertStatus.CLEARED_UNACK: "cleared unack",
    AlertStatus.CLEARED_ACK: "closed",
}
_DIRECTION = {"below": "<", "above": ">"}
# The metrics' UCUM units (schemas/metrics.py) as clinicians write them.
_UNIT = {
    "heart_rate": "/min",
    "spo2": "%",
    "resp_rate": "/min",
    "temperature": "°C",
    "systolic_bp": "mmHg",
    "diastolic_bp": "mmHg",
}
# ID, Priority, Patient and Ward keep their places, so `cut -f3` still finds the patient.
_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("ID", "right"),
    ("Priority", "left"),
    ("Patient", "left"),
    ("Ward", "left"),
    ("Alert", "left"),
    ("Last", "right"),
    ("Worst", "right"),
    ("Limit", "left"),
    ("Status", "left"),
    ("Escalation", "left"),
    ("Silenced", "left"),
    ("Age", "right"),
)
_ALERT_COLUMN = 4
_STATUS_COLUMN = 8
_SILENCED_COLUMN = 10
# A narrow terminal's table: escalation and silence go on lines of their own in the
# Status cell instead of two columns, and the worst value is left out. At 80 columns
# the label kept about 5 characters otherwise, and rich began cutting the ages.
_NARROW_COLUMNS = _COLUMNS[:6] + _COLUMNS[7:9] + _COLUMNS[11:]
_UNBOUNDED = 10_000
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
    """`< 92 %`, `> 130 /min`, or `-` for an alert without a threshold (device offline)."""
    if alert.threshold is None:
        return _NONE
    value = format_value(alert.threshold)
    unit = _UNIT.get(alert.metric or "")
    if unit is not None:
        value = f"{value} {unit}"
    return value if alert.direction is None else f"{_DIRECTION[alert.direction]} {value}"


# The multiplication sign of "ESCALATED x2" as the issue writes it (ruff flags the literal).
_TIMES = "\u00d7"


def format_escalation(alert: AlertOut) -> str:
    """`ESCALATED` and the times sign with the count (`… x2`), or `` if never escalated."""
    return f"ESCALATED {_TIMES}{alert.escalation}" if alert.escalation > 0 else ""


def format_silence(alert: AlertOut, left_s: float | None) -> str:
    """`silenced by dr-lee, 95 s left` while its sound is paused, else ``.

    Whole seconds rounded up: the count reaches 1 s, never 0 s, before it ends.
    """
    if left_s is None or alert.silenced_by is None:
        return ""
    return f"silenced by {alert.silenced_by}, {math.ceil(left_s)} s left"


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


def fitted_table(rows: Sequence[AlertRow], console: Console, *, title: str | None = None) -> Table:
    """`alerts_table`, wide when it fits `console` (or off a terminal, where every value
    is printed whole), else narrow."""
    table = alerts_table(rows, title=title)
    # Measured unbounded: rich caps a table's measure at the width it is given.
    natural = console.measure(table, options=console.options.update_width(_UNBOUNDED)).maximum
    if not console.is_terminal or natural <= console.width:
        return table
    return alerts_table(rows, title=title, wide=False)


def _status_cell(row: AlertRow, *, wide: bool) -> Text:
    a = row.alert
    # Unacknowledged is what needs a clinician: make it stand out in any colour.
    text = Text(_STATUS_TEXT[a.status], style="bold" if a.status.endswith("unack") else "")
    if not wide:
        if escalation := format_escalation(a):
            text.append("\n" + escalation, style=ESCALATED_STYLE)
        if silence := format_silence(a, row.silence_left_s):
            text.append("\n" + silence, style="dim")
    return text


def alerts_table(rows: Sequence[AlertRow], *, title: str | None = None, wide: bool = True) -> Table:
    """One row per alert: its label, priority and limit in columns of their own; wide,
    escalation and silence have theirs too, else they are lines of the Status cell."""
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box draws one space between columns
    )
    # Everything but the label and the silence keeps its width: on a narrow terminal the
    # label is shortened and the silence wraps, never the priority word or a value.
    for name, justify in _COLUMNS if wide else _NARROW_COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True, overflow="fold")
    table.columns[_ALERT_COLUMN].overflow = "ellipsis"
    table.columns[_ALERT_COLUMN].no_wrap = False
    if wide:
        table.columns[_SILENCED_COLUMN].no_wrap = False
    else:
        # The Status cell's silence line wraps; its status and escalation lines do not.
        status = table.columns[_STATUS_COLUMN - 1]
        status.no_wrap = False
        status.min_width = status.max_width = max(map(len, _STATUS_TEXT.values()))
    for row in rows:
        a = row.alert
        cells: list[RenderableType] = [
            str(a.id),
            a.priority.upper(),
            a.patient_id,
            a.ward,
            a.label or a.rule,
            format_value(a.last_value),
            format_limit(a),
            _status_cell(row, wide=wide),
        ]
        if wide:
            cells.insert(6, format_value(a.worst_value))
            cells.append(Text(format_escalation(a), style=ESCALATED_STYLE))
            cells.append(Text(format_silence(a, row.silence_left_s), style="dim"))
        cells.append(format_age(row.age_s))
        table.add_row(*cells, style=PRIORITY_STYLE[a.priority])
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
    escalated = sum(1 for row in board.open_alerts(now) if row.alert.escalation > 0)
    if escalated:
        text.append(" · ")
        text.append(f"{escalated} ESCALATED", style=ESCALATED_STYLE)
    return text


def screen(
    board: AlertBoard, link: Link, now: datetime, console: Console, *, ack_hint: bool
) -> RenderableType:
    """The live view on `console`: the open-alerts table (fitted to its width), the
    status line, the last notice."""
    rows = board.open_alerts(now)
    parts: list[RenderableType] = [
        fitted_table(rows, console, title="Open alerts")
        if rows
        else Text("No open alerts.", style="dim"),
        status_line(link, board, now),
    ]
    if link.notice:
        parts.append(Text(link.notice, style="italic"))
    if ack_hint:
        parts.append(Text(COMMAND_HINT, "dim"))
    return Group(*parts)
