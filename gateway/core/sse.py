"""Server-Sent Events (the WHATWG `text/event-stream` format), both ways, without I/O.

The gateway encodes each event once with `event_bytes` and writes the same bytes to
every SSE client; `SseParser` is the client side (`vitals watch --transport sse`):
bytes in (`feed`), whole events out, with the spec's `id`/`event`/`data`/`retry` rules.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SseEvent",
    "SseParser",
    "comment_bytes",
    "event_bytes",
    "id_bytes",
    "retry_bytes",
]


def event_bytes(data: str, *, event: str | None = None, event_id: int | None = None) -> bytes:
    """One event: `id:` (when given), `event:` (when given), one `data:` line per line of
    `data`, and the blank line that dispatches it."""
    head = ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    if event is not None:
        head += f"event: {event}\n"
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (head + body + "\n").encode()


def id_bytes(event_id: int) -> bytes:
    """An id with no data: it moves the client's last event id (what it resumes from)
    and dispatches no event."""
    return f"id: {event_id}\n\n".encode()


def comment_bytes(text: str = "") -> bytes:
    """A comment line: clients ignore it; proxies see traffic and keep the stream open."""
    return f": {text}\n\n".encode()


def retry_bytes(milliseconds: int) -> bytes:
    """How long a client waits before reconnecting after the stream ends."""
    return f"retry: {milliseconds}\n\n".encode()


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

    def __init__(self) -> None:
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
            case "retry" if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if self._id_buffer is not None:
            self.last_event_id = self._id_buffer
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
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
