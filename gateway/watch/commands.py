"""What a clinician types into `vitals watch`, as the dashboard message it becomes.

`7` (or `#7`, `ack 7`) acknowledges alert 7; `s 7` (or `silence 7`) silences it for
`DEFAULT_SILENCE_S`, `s 7 60` for 60 s. Pure: no I/O, no event loop.
"""

from __future__ import annotations

from schemas.dashboard import AckRequest, SilenceRequest

__all__ = ["COMMAND_HINT", "DEFAULT_SILENCE_S", "Command", "parse_command"]

# The gateway's shipped `max_silence_s`. A dashboard cannot read the setting (no
# endpoint shows it), so a gateway configured lower refuses this with `bad_message`
# naming its limit, and the watcher shows that answer: type `s 7 60` then.
DEFAULT_SILENCE_S = 120

COMMAND_HINT = (
    f"Type an alert id + Enter to acknowledge, s <id> to silence it for {DEFAULT_SILENCE_S} s"
    " (s <id> <seconds> for less); Ctrl-C to quit."
)

Command = AckRequest | SilenceRequest

_SILENCE_WORDS = ("s", "silence")
_MAX_ID = 2**63 - 1  # as the dashboard protocol: a larger id names nothing


def _alert_id(text: str) -> int | None:
    text = text.removeprefix("#")
    if not text.isdigit():  # digits only: no sign, no spaces
        return None
    alert_id = int(text)
    return alert_id if 1 <= alert_id <= _MAX_ID else None


def parse_command(line: str) -> Command | None:
    """The message a typed line asks for; None if it is no command."""
    words = line.strip().lower().split()
    if not words:
        return None
    if words[0] in _SILENCE_WORDS and len(words) in (2, 3):
        alert_id = _alert_id(words[1])
        seconds = DEFAULT_SILENCE_S if len(words) == 2 else _seconds(words[2])
        if alert_id is None or seconds is None:
            return None
        return SilenceRequest(type="silence", alert_id=alert_id, seconds=seconds)
    if words[0] == "ack":
        words = words[1:]
    if len(words) != 1:
        return None
    alert_id = _alert_id(words[0])
    return None if alert_id is None else AckRequest(type="ack", alert_id=alert_id)


def _seconds(text: str) -> int | None:
    text = text.removesuffix("s")  # `60s` as well as `60`
    if not text.isdigit():
        return None
    seconds = int(text)
    # The protocol's own bound; the gateway's `max_silence_s` is checked by the gateway.
    return seconds if 1 <= seconds <= 86_400 else None
