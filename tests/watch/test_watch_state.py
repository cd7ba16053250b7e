"""The watcher's AlertBoard on plain events: no socket, no event loop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console

from gateway.watch.render import (
    alerts_table,
    fitted_table,
    format_age,
    format_escalation,
    format_limit,
    format_silence,
    status_line,
)
from gateway.watch.state import AlertBoard, ChangeKind, Link
from schemas.dashboard import AlertEvent
from tests.watch.events import T0, alert_event


def event(
    event_id: int,
    alert_id: int,
    *,
    status: str = "active_unack",
    priority: str = "high",
    raised: float = 0.0,
    patient: str = "p-017",
    last: float = 87.0,
) -> dict[str, Any]:
    """An alert event as the gateway sends it; `raised` is seconds after T0."""
    return alert_event(
        event_id,
        alert_id,
        status=status,
        priority=priority,
        raised=raised,
        patient=patient,
        last=last,
    )


def live_board(since: int = 0) -> AlertBoard:
    """A board whose start-up replay (empty) is done."""
    board = AlertBoard(since)
    board.start_replay()
    board.subscribed(since)
    return board


def test_apply_adds_updates_and_accepts_models() -> None:
    """A dict or an AlertEvent adds the alert; a later event replaces its state."""
    board = live_board()
    assert board.apply(event(1, 7)).kind is ChangeKind.RAISED
    change = board.apply(AlertEvent.model_validate(event(2, 7, last=85)))
    assert change.kind is ChangeKind.UPDATED
    alert = board.get(7)
    assert alert is not None
    assert alert.last_value == 85
    assert len(board) == 1
    assert board.last_event_id == 2


def test_open_alerts_sorted_by_priority_then_newest() -> None:
    """Rows come high before medium before low, and newest raised first within one."""
    board = live_board()
    board.apply(event(1, 1, priority="low", raised=50))
    board.apply(event(2, 2, priority="high", raised=10))
    board.apply(event(3, 3, priority="medium", raised=30))
    board.apply(event(4, 4, priority="high", raised=20))
    rows = board.open_alerts(T0 + timedelta(seconds=60))
    assert [r.alert.id for r in rows] == [4, 2, 3, 1]
    assert [r.age_s for r in rows] == [40, 50, 30, 10]


@pytest.mark.parametrize("status", ["active_ack", "cleared_unack"])
def test_acked_or_cleared_alerts_stay_open(status: str) -> None:
    """Only cleared *and* acknowledged closes an alert; the other states stay listed."""
    board = live_board()
    board.apply(event(1, 7))
    assert board.apply(event(2, 7, status=status)).kind is ChangeKind.UPDATED
    assert 7 in board


def test_closed_alert_removed() -> None:
    """A cleared_ack event drops the alert from the open list."""
    board = live_board()
    board.apply(event(1, 7))
    board.apply(event(2, 8))
    change = board.apply(event(3, 7, status="cleared_ack"))
    assert change.kind is ChangeKind.CLOSED
    assert [r.alert.id for r in board.open_alerts(T0)] == [8]
    assert board.last_event_id == 3


def test_alert_closed_by_a_device_revocation_is_removed() -> None:
    """A cleared_ack event with closed_by and no acknowledgement (its device revoked)
    closes the alert like any other; events without the closing fields still parse."""
    board = live_board()
    board.apply(event(1, 7))
    closing = event(2, 7, status="cleared_ack")
    closing["alert"] |= {"acked_at": None, "acked_by": None}
    closing["alert"] |= {"closed_by": "root", "closed_reason": "device_revoked"}
    change = board.apply(closing)
    assert change.kind is ChangeKind.CLOSED
    assert (change.alert.closed_by, change.alert.acked_by) == ("root", None)
    assert board.open_alerts(T0) == []


def test_closed_alert_never_seen_is_ignored() -> None:
    """Closing an alert the board never had changes nothing but the resume point."""
    board = live_board()
    change = board.apply(event(5, 3, status="cleared_ack"))
    assert change.kind is ChangeKind.IGNORED
    assert len(board) == 0
    assert board.last_event_id == 5


def test_startup_replay_never_rings() -> None:
    """High alerts in the first replay are old news: no bell."""
    board = AlertBoard()
    assert board.start_replay() == 0
    change = board.apply(event(4, 7))
    assert change.kind is ChangeKind.ADDED
    assert not change.ring
    board.subscribed(4)
    assert board.live


def test_live_raise_rings_for_high_priority_only() -> None:
    """Live: a new high alert rings; medium, low and updates of known alerts do not."""
    board = live_board()
    assert board.apply(event(1, 1, priority="high")).ring
    assert not board.apply(event(2, 2, priority="medium")).ring
    assert not board.apply(event(3, 3, priority="low")).ring
    assert not board.apply(event(4, 1, priority="high", last=80)).ring
    # Already acknowledged when first seen: nobody needs waking.
    assert not board.apply(event(5, 9, status="active_ack")).ring


def test_raise_missed_while_disconnected_rings_on_resume() -> None:
    """A replay after a reconnection holds the missed events: a new high alert still rings."""
    board = live_board()
    board.apply(event(1, 1))
    assert board.start_replay() == 1
    change = board.apply(event(2, 2))
    assert change.kind is ChangeKind.RAISED
    assert change.ring


def test_resume_id_and_duplicates() -> None:
    """The resume point is the last event seen; overlapping events are ignored."""
    board = AlertBoard(since_event_id=10)
    assert board.start_replay() == 10
    assert board.apply(event(10, 1)).kind is ChangeKind.IGNORED  # at the floor
    board.apply(event(11, 1))
    board.apply(event(12, 2))
    board.subscribed(12)
    assert board.apply(event(12, 2, last=80)).kind is ChangeKind.IGNORED
    assert board.apply(event(13, 2, last=80)).kind is ChangeKind.UPDATED
    assert board.start_replay() == 13
    assert board.apply(event(13, 2)).kind is ChangeKind.IGNORED
    board.apply(event(14, 1))
    board.subscribed(14)
    assert board.last_event_id == 14


def test_subscribed_advances_resume_point() -> None:
    """An empty replay still moves the resume point to the gateway's last event id."""
    board = AlertBoard()
    board.start_replay()
    board.subscribed(42)
    assert board.last_event_id == 42
    assert board.start_replay() == 42


def test_snapshot_replay_in_any_order() -> None:
    """A since=0 snapshot may come in alert order; an older event never overwrites a newer."""
    board = AlertBoard()
    board.start_replay()
    board.apply(event(9, 1, last=70))
    board.apply(event(5, 2))
    board.apply(event(3, 1, last=99))  # older than what the board has for alert 1
    board.subscribed(9)
    alert = board.get(1)
    assert alert is not None
    assert alert.last_value == 70
    assert len(board) == 2
    assert board.last_event_id == 9


def test_render_names_priority_and_formats_values() -> None:
    """The table writes the priority as a word and the limit with its direction."""
    board = live_board()
    board.apply(event(1, 7, priority="high"))
    board.apply(event(2, 8, priority="low", patient="p-002"))
    table = alerts_table(board.open_alerts(T0 + timedelta(seconds=125)))
    cells = [list(col.cells) for col in table.columns]
    assert cells[1] == ["HIGH", "LOW"]
    assert cells[11] == ["2m 05s", "2m 05s"]
    alert = board.get(7)
    assert alert is not None
    assert format_limit(alert) == "< 92 %"
    assert format_age(3 * 3600 + 61) == "3h 01m"
    assert "last event 2" in status_line(Link(), board, T0).plain


def labelled(event_id: int, alert_id: int, **alert: Any) -> dict[str, Any]:
    """An event whose alert has the fields of `alert` (label, escalation, silence…)."""
    priority, status = alert.pop("priority", "high"), alert.pop("status", "active_unack")
    ev = event(
        event_id, alert_id, priority=priority, status=status, raised=alert.pop("raised", 0.0)
    )
    ev["alert"] |= alert
    return ev


def test_label_priority_and_limit_are_three_cells() -> None:
    """The label, the priority word and the limit with direction and unit are separate
    cells: never "< 41 high"; a rule without a label shows its name."""
    board = live_board()
    board.apply(labelled(1, 7, label="Heart rate low", metric="heart_rate", threshold=41))
    board.apply(labelled(2, 8, priority="medium", metric="systolic_bp", direction="above",
                         threshold=219))  # fmt: skip
    table = alerts_table(board.open_alerts(T0))
    header = [col.header for col in table.columns]
    rows = {c[0]: c for c in zip(*(col.cells for col in table.columns), strict=True)}
    at = {name: header.index(name) for name in ("Alert", "Priority", "Limit")}
    assert [rows["7"][at[n]] for n in at] == ["Heart rate low", "HIGH", "< 41 /min"]
    assert [rows["8"][at[n]] for n in at] == ["spo2-low", "MEDIUM", "> 219 mmHg"]
    offline = board.get(7)
    assert offline is not None
    assert format_limit(offline.model_copy(update={"threshold": None})) == "-"


def test_unacknowledged_before_acknowledged_then_priority_then_escalation() -> None:
    """An acknowledged high alert sorts below an unacknowledged low one; among equals
    the more escalated comes first."""
    board = live_board()
    board.apply(labelled(1, 1, status="active_ack", raised=50))
    board.apply(labelled(2, 2, priority="low", raised=10))
    board.apply(labelled(3, 3, status="cleared_unack", priority="medium", raised=20))
    board.apply(labelled(4, 4, raised=40))
    board.apply(labelled(5, 5, escalation=2, raised=30))
    rows = board.open_alerts(T0 + timedelta(seconds=60))
    assert [r.alert.id for r in rows] == [5, 4, 3, 2, 1]


def test_escalation_is_marked_and_rings() -> None:
    """An escalation event rings live (not in the first replay) and reads ESCALATED x2."""
    board = AlertBoard()
    board.start_replay()
    board.apply(labelled(1, 7))
    assert not board.apply(labelled(2, 7, escalation=1)).ring
    board.subscribed(2)
    change = board.apply(labelled(3, 7, escalation=2))
    assert change.ring
    assert format_escalation(change.alert) == "ESCALATED \u00d72"
    assert format_escalation(change.alert.model_copy(update={"escalation": 0})) == ""
    assert not board.apply(labelled(4, 7, escalation=2, last_value=80)).ring


def test_silence_counts_down_and_its_end_rings_for_high() -> None:
    """A silenced alert shows who and the whole seconds left, rounded up, until it ends;
    when the silence is lifted a high unacknowledged alert rings again, a medium not."""
    board = live_board()
    until = (T0 + timedelta(seconds=120)).isoformat()
    board.apply(labelled(1, 7, silenced_by="dr-lee", silenced_until=until))
    board.apply(labelled(2, 8, priority="medium", silenced_by="dr-lee", silenced_until=until))
    texts = []
    for now in (0.0, 24.5, 119.2, 120.0):
        (row,) = [r for r in board.open_alerts(T0 + timedelta(seconds=now)) if r.alert.id == 7]
        texts.append(format_silence(row.alert, row.silence_left_s))
    assert texts == [
        "silenced by dr-lee, 120 s left",
        "silenced by dr-lee, 96 s left",
        "silenced by dr-lee, 1 s left",
        "",
    ]
    assert board.apply(labelled(3, 7, silenced_by=None, silenced_until=None)).ring
    assert not board.apply(labelled(4, 8, priority="medium")).ring


def test_wide_terminal_gets_columns_narrow_gets_lines_in_status() -> None:
    """140 columns: Escalation and Silenced are columns; 80: they are lines of the
    Status cell, and the priority word, limit and age are still whole."""
    board = live_board()
    until = (T0 + timedelta(seconds=90)).isoformat()
    board.apply(labelled(1, 7, label="SpO\u2082 low", escalation=2))
    board.apply(labelled(2, 8, label="Respiration rate high", silenced_by="dr-lee",
                         silenced_until=until))  # fmt: skip
    rows = board.open_alerts(T0 + timedelta(seconds=30))

    def drawn(width: int) -> tuple[list[str], str]:
        console = Console(width=width, force_terminal=True, color_system=None, record=True)
        table = fitted_table(rows, console)
        console.print(table)
        return [str(c.header) for c in table.columns], console.export_text()

    wide_header, wide = drawn(140)
    assert wide_header[-3:] == ["Escalation", "Silenced", "Age"]
    assert "silenced by dr-lee, 60 s left" in wide
    narrow_header, narrow = drawn(80)
    assert "Escalation" not in narrow_header
    assert "Silenced" not in narrow_header
    assert "ESCALATED \u00d72" in narrow
    assert "silenced by" in narrow
    assert "< 92 %" in narrow
    assert "HIGH" in narrow
    assert max(map(len, narrow.splitlines())) <= 80


def test_piped_table_is_always_wide() -> None:
    """Off a terminal every value is whole: the wide table, whatever the width."""
    board = live_board()
    board.apply(labelled(1, 7, escalation=1))
    table = fitted_table(board.open_alerts(T0), Console(width=40, force_terminal=False))
    assert [str(c.header) for c in table.columns][-3:] == ["Escalation", "Silenced", "Age"]


def test_status_line_counts_escalated() -> None:
    """The status line says how many open alerts are escalated, when any are."""
    board = live_board()
    board.apply(labelled(1, 7))
    assert "ESCALATED" not in status_line(Link(), board, T0).plain
    board.apply(labelled(2, 8, escalation=1))
    assert "1 ESCALATED" in status_line(Link(), board, T0).plain
