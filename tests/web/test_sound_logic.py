"""The alarm sound's decision (sound.js `dueTone`: alerts and a clock in, which tone is
due out) and its Web Audio layer, rendered offline, in Chromium without a gateway."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

T0 = 1_800_000_000_000  # a clock value (ms), far from any real alert's timestamps


async def run(page: Page, body: str) -> Any:
    """Evaluate an async function body with sound.js imported as `sound`."""
    return await page.evaluate(
        f"""async () => {{
            const sound = await import("/static/sound.js");
            {body}
        }}"""
    )


def alert(
    alert_id: int, priority: str, status: str = "active_unack", silenced_until: str | None = None
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "priority": priority,
        "status": status,
        "silenced_until": silenced_until,
        "escalation": 0,
        "patient_id": f"bed-{alert_id}",
    }


def iso(ms: int) -> str:
    """An ISO timestamp `ms` after the epoch, as the gateway writes them."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def steps(page: Page, script: list[tuple[int, list[dict[str, Any]]]]) -> list[list[Any]]:
    """Feed `dueTone` (ms after T0, alerts) in order, threading its `last`; return
    [action, priority] per step."""
    result: list[list[Any]] = await run(
        page,
        f"""
        let last = null;
        return {json.dumps(script)}.map(([dt, alerts]) => {{
          const d = sound.dueTone(alerts, {T0} + dt, last);
          if (!Object.isFrozen(d)) throw new Error("a decision must be a frozen value");
          last = d.last;
          return [d.action, d.priority];
        }});
        """,
    )
    return result


async def test_the_highest_active_unacknowledged_unsilenced_priority_sounds(
    static_page: Page,
) -> None:
    """Acknowledged, cleared and silenced alerts are quiet; of the rest the highest
    priority sounds; nothing sounding is null."""
    cases = [
        [alert(1, "low"), alert(2, "medium")],
        [alert(1, "low"), alert(2, "high", "active_ack"), alert(3, "high", "cleared_unack")],
        [alert(1, "medium"), alert(2, "high", silenced_until=iso(T0 + 5_000))],
        [alert(1, "medium"), alert(2, "high", silenced_until=iso(T0 - 1))],
        [alert(1, "medium", "active_ack"), alert(2, "low", "cleared_unack")],
        [],
    ]
    got = await run(
        static_page,
        f"return {json.dumps(cases)}.map((alerts) => sound.soundingPriority(alerts, {T0}));",
    )
    assert got == ["medium", "low", "medium", "high", None, None]


async def test_a_tone_starts_at_once_repeats_at_its_interval_and_stops_when_answered(
    static_page: Page,
) -> None:
    """A new high alarm plays at once and again only every repeatMs (6 s); a medium one
    under it changes nothing; acknowledging the high one brings in the medium tone at
    once; acknowledging that stops the sound, and a later alarm plays at once."""
    high, medium = alert(1, "high"), alert(2, "medium")
    acked_high = alert(1, "high", "active_ack")
    acked_medium = alert(2, "medium", "active_ack")
    got = await steps(
        static_page,
        [
            (0, [high]),
            (1_000, [high, medium]),
            (5_999, [high, medium]),
            (6_000, [high, medium]),
            (7_000, [acked_high, medium]),
            (8_000, [acked_high, medium]),
            (9_000, [acked_high, acked_medium]),
            (10_000, [acked_high, acked_medium]),
            (11_000, [acked_high, acked_medium, alert(3, "low")]),
        ],
    )
    assert got == [
        ["play", "high"],
        ["none", "high"],
        ["none", "high"],
        ["play", "high"],
        ["play", "medium"],
        ["none", "medium"],
        ["stop", None],
        ["none", None],
        ["play", "low"],
    ]


async def test_a_silenced_alarm_is_quiet_until_its_silence_ends_then_sounds_again(
    static_page: Page,
) -> None:
    """Silencing the only alarm stops its tone; it stays quiet until silenced_until and
    then plays at once, being still active and unacknowledged; a higher alarm raised
    meanwhile is not silenced by the other's silence."""
    until = iso(T0 + 4_000)
    silenced = alert(1, "medium", silenced_until=until)
    got = await steps(
        static_page,
        [
            (0, [alert(1, "medium")]),
            (1_000, [silenced]),
            (3_999, [silenced]),
            (4_000, [silenced]),
            (4_500, [silenced]),
            (5_000, [silenced, alert(2, "high")]),
        ],
    )
    assert got == [
        ["play", "medium"],
        ["stop", None],
        ["none", None],
        ["play", "medium"],
        ["none", "medium"],
        ["play", "high"],
    ]


async def test_an_escalation_sounds_at_once_unless_silenced(static_page: Page) -> None:
    """An alarm that escalates plays its burst at once rather than at its next repeat,
    once per escalation; a silenced alarm that escalates stays quiet."""
    first = alert(1, "high") | {"escalation": 1}
    second = alert(1, "high") | {"escalation": 2}
    silenced = second | {"silenced_until": iso(T0 + 60_000)}
    got = await steps(
        static_page,
        [
            (0, [alert(1, "high")]),
            (1_000, [first]),
            (2_000, [first]),
            (3_000, [second]),
            (4_000, [silenced | {"escalation": 3}]),
        ],
    )
    assert got == [
        ["play", "high"],
        ["play", "high"],
        ["none", "high"],
        ["play", "high"],
        ["stop", None],
    ]


async def test_tones_follow_iec_60601_1_8_shapes(static_page: Page) -> None:
    """High is a burst of ten pulses, quicker and more often than medium's three, and
    low has one or two pulses, the rarest; each priority has its own pitch."""
    tones = await run(static_page, "return sound.TONES;")
    high, medium, low = tones["high"], tones["medium"], tones["low"]
    assert (len(high["onsets"]), len(medium["onsets"])) == (10, 3)
    assert 1 <= len(low["onsets"]) <= 2
    assert high["repeatMs"] < medium["repeatMs"] < low["repeatMs"]
    spacing = {p: t["onsets"][1] - t["onsets"][0] for p, t in tones.items()}
    assert spacing["high"] < spacing["medium"]
    assert len({high["frequency"], medium["frequency"], low["frequency"]}) == 3


async def render(page: Page, body: str) -> dict[str, Any]:
    """Run `body` with `speaker` (an AlarmSpeaker on a 3 s OfflineAudioContext), render
    the audio, and describe it: the pulses heard (start s, length s, pitch Hz)."""
    described: dict[str, Any] = await run(
        page,
        f"""
        const rate = 16000;
        const speaker = new sound.AlarmSpeaker(() => new OfflineAudioContext(1, rate * 3, rate));
        speaker.unlock();
        {body}
        const samples = (await speaker.ctx.startRendering()).getChannelData(0);
        const win = rate / 100;  // 10 ms windows: loud or quiet
        const pulses = [];
        let open = null;
        for (let i = 0; i + win <= samples.length; i += win) {{
          let energy = 0, crossings = 0;
          for (let j = i; j < i + win; j++) {{
            energy += samples[j] * samples[j];
            if (j > i && (samples[j - 1] < 0) !== (samples[j] < 0)) crossings++;
          }}
          const loud = Math.sqrt(energy / win) > 0.02;
          if (loud && !open) open = {{ start: i / rate, windows: 0, crossings: 0 }};
          if (loud) {{ open.windows++; open.crossings += crossings; }}
          if (!loud && open) {{ pulses.push(open); open = null; }}
        }}
        if (open) pulses.push(open);
        const seconds = (p) => p.windows / 100;
        return {{ pulses: pulses.map((p) => [p.start, seconds(p), p.crossings / 2 / seconds(p)]) }};
        """,
    )
    return described


async def test_the_speaker_plays_each_priority_as_rendered_audio(static_page: Page) -> None:
    """Rendered through Web Audio, the high tone is ten 880 Hz pulses in 3 + 2, 3 + 2
    and the medium tone three 660 Hz pulses."""
    high = await render(static_page, 'speaker.play("high");')
    assert len(high["pulses"]) == 10, high
    starts = [round(p[0], 2) for p in high["pulses"]]
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.2, 0.2, 0.4, 0.2, 0.6, 0.2, 0.2, 0.4, 0.2], starts
    assert all(abs(p[2] - 880) < 40 for p in high["pulses"]), high
    medium = await render(
        static_page,
        'speaker.update(sound.dueTone([{status: "active_unack", priority: "medium"}], 0, null));',
    )
    assert len(medium["pulses"]) == 3, medium
    assert all(abs(p[2] - 660) < 40 for p in medium["pulses"]), medium


async def test_stopping_cuts_the_burst_in_flight(static_page: Page) -> None:
    """A burst stopped as it starts (the alarm acknowledged) is never heard; a new
    tone replaces the one playing rather than sounding on top of it."""
    stopped = await render(static_page, 'speaker.play("high"); speaker.update({action: "stop"});')
    assert stopped["pulses"] == []
    replaced = await render(static_page, 'speaker.play("high"); speaker.play("low");')
    assert len(replaced["pulses"]) == 2, replaced
    assert all(abs(p[2] - 440) < 40 for p in replaced["pulses"]), replaced
