"""Server-to-client WebSocket frames, encoded once and written whole to the transport.

A server's frames are unmasked (RFC 6455 §5.1), so one message's frame is the same
bytes on every socket: an alert event is framed once for all dashboards, and several
queued frames go out in one write. aiohttp's `send_str` would frame and write each
message on each socket again; `FrameSender` writes on the same transport, between
whole frames, so aiohttp's own pings and close frame interleave safely (the event loop
runs one write at a time). Streams that use it decline permessage-deflate.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol

from aiohttp import web

__all__ = [
    "BUFFER_HIGH",
    "FrameSender",
    "FrameSink",
    "binary_frame",
    "ping_frame",
    "pong_frame",
    "text_frame",
]

_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_PING = 0x9
_OP_PONG = 0xA
_FIN = 0x80

# A peer that leaves this much unread in the transport's buffer (beyond what the kernel
# holds) is reading slowly: senders wait until it drains (see `FrameSender.drained`).
BUFFER_HIGH = 64 * 1024
# How often a sender waiting on a slow peer looks again: such waits are rare.
_DRAIN_POLL_S = 0.01


def _frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _FIN | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, n)
    return header + payload


def text_frame(text: str) -> bytes:
    """One complete, unfragmented text frame carrying `text`."""
    return _frame(text.encode(), _OP_TEXT)


def binary_frame(data: bytes) -> bytes:
    """One complete, unfragmented binary frame carrying `data`."""
    return _frame(data, _OP_BINARY)


def ping_frame(data: bytes = b"") -> bytes:
    return _frame(data, _OP_PING)


def pong_frame(data: bytes) -> bytes:
    """The answer to a ping: its payload echoed (at most 125 bytes, RFC 6455 §5.5)."""
    return _frame(data[:125], _OP_PONG)


class FrameSink(Protocol):
    """Where a stream's frames go: `FrameSender` on a live socket."""

    def write(self, frames: bytes) -> bool: ...

    @property
    def backed_up(self) -> bool: ...

    async def drained(self) -> None: ...


class FrameSender:
    """Writes ready-made frames to one prepared WebSocket's transport, synchronously."""

    __slots__ = ("_transport", "_ws")  # one per connection

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        self._ws = ws
        self._transport = request.transport

    def write(self, frames: bytes) -> bool:
        """Write one or more whole frames; False (nothing written) once the socket is
        closing, so nothing follows a close frame."""
        transport = self._transport
        if self._ws.closed or transport is None or transport.is_closing():
            return False
        transport.write(frames)
        return True

    @property
    def backed_up(self) -> bool:
        """More than BUFFER_HIGH is waiting for the peer to read it."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() > BUFFER_HIGH

    def abort(self) -> None:
        """Drop the TCP connection at once (a dead peer would not answer a close)."""
        if self._transport is not None:
            self._transport.abort()

    async def drained(self) -> None:
        """Return once the peer has read what was backed up (or the socket closes)."""
        # The transport tells its protocol (aiohttp's) when it drains, not us: polled.
        while self.backed_up and not self._ws.closed:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL_S)
