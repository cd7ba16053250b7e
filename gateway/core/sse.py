"""Server-Sent Events (the WHATWG `text/event-stream` format) as the gateway writes
them, without I/O: each event is encoded once with `event_bytes` and the same bytes go
to every SSE client. The client side is `gateway.client.sse`.
"""

from __future__ import annotations

__all__ = [
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
