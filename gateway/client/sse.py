"""Server-Sent Events read by a client (`vitals watch --transport sse`), without I/O:
bytes in (`SseParser.feed`), whole events out, by the WHATWG `text/event-stream` rules
for `id`, `event`, `data` and `retry`. The gateway's side is `gateway.core.sse`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type ("message" when unnamed), data and the client's
    last event id after it (None until the stream has given one)."""

    event: str
    data: str
    last_event_id: str | None


class SseParser:
    """An event stream's parser: `feed` it bytes as they arrive, get back the events
    completed by them. `last_event_id` and `retry_ms` follow the stream's `id:` and
    `retry:` fields, as an EventSource's would."""

    def __init__(self, *, positions: bool = False) -> None:
        # With `positions`, a block with an id and no data comes out as an event named
        # "" (the gateway sends one after its replay: where a resumption starts).
        self._positions = positions
        self._id_seen = False
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._id_buffer: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._pending += chunk
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._pending)
            if cut is None:
                return events
            end, after = cut
            line = self._pending[:end].decode(errors="replace")
            self._pending = self._pending[after:]
            if (event := self._line(line)) is not None:
                events.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        match name:
            case "data":
                self._data.append(value)
            case "event":
                self._event = value
            case "id" if "\0" not in value:
                self._id_buffer = value
                self._id_seen = True
            case "retry" if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if self._id_buffer is not None:
            self.last_event_id = self._id_buffer
        data, event, id_seen = self._data, self._event or "message", self._id_seen
        self._data, self._event, self._id_seen = [], "", False
        if not data:
            if self._positions and id_seen:
                return SseEvent("", "", self.last_event_id)
            return None
        return SseEvent(event, "\n".join(data), self.last_event_id)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of `buffer` ends and the next starts (CRLF, LF or CR), or
    None while the line is incomplete (a CR at the very end may be half of a CRLF)."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(buffer):
        return None
    return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)
