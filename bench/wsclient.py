"""A minimal RFC 6455 client for the load generator: thousands of sockets per process
with no task, queue or future per message.

The codec is pure (`handshake_request`, `check_handshake`, `encode_frame`,
`FrameParser`); `WsProtocol` is the thin asyncio shell that feeds it bytes and hands
text frames to `on_text`. Pings are answered and a close is echoed; fragmented frames
and extensions are refused (the gateway sends neither).

Client frames carry an all-zero masking key. Masking is mandatory, and a zero key
leaves the payload as encoded, so sending a frame is one concatenation; the server
still XORs every byte as it would for any key, so its work is unchanged. The key's
purpose (defeating cache poisoning by proxies) does not arise on loopback; never reuse
this client anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import cast

from schemas.codes import CloseCode

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "HandshakeError",
    "WsProtocol",
    "WsProtocolError",
    "check_handshake",
    "encode_frame",
    "handshake_request",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_ZERO_MASK = b"\x00\x00\x00\x00"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 16 * 1024


class WsProtocolError(Exception):
    """The server broke the protocol (or used a part of it this client leaves out)."""


class HandshakeError(WsProtocolError):
    """The upgrade was refused; `status` is the HTTP status (e.g. 401), 0 if unreadable."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"upgrade refused: {status} {detail}".strip())
        self.status = status


def handshake_request(
    host: str, port: int, path: str, headers: dict[str, str], key: bytes | None = None
) -> tuple[bytes, bytes]:
    """The upgrade request and its `Sec-WebSocket-Key` (random unless given)."""
    key = key if key is not None else base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def check_handshake(head: bytes, key: bytes) -> None:
    """Check the response head (without the blank line) accepts the upgrade of `key`."""
    status_line, _, rest = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise HandshakeError(0, repr(status_line[:80])) from None
    if status != 101:
        raise HandshakeError(status, parts[2].decode(errors="replace") if len(parts) > 2 else "")
    expected = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            if value.strip() != expected:
                raise HandshakeError(101, "wrong Sec-WebSocket-Accept")
            return
    raise HandshakeError(101, "no Sec-WebSocket-Accept")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked (zero key: see the module docstring) client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


class FrameParser:
    """Server frames out of a byte stream: feed bytes, get the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every frame completed by `data`, in order."""
        buf = self._buf
        if not buf and len(data) >= 2:
            # The common case, one small whole frame per read: no buffering at all.
            # (A length byte below 126 also means the mask bit is clear.)
            n = data[1]
            if n < 126 and len(data) == n + 2 and data[0] & 0xF0 == 0x80:
                return [(data[0] & 0x0F, data[2:])]
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70 or not b0 & 0x80:
                raise WsProtocolError("fragmented frame or extension bits: not supported")
            if b1 & 0x80:
                raise WsProtocolError("a server must not mask its frames")
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            stop = pos + head + length
            if stop > end:
                break
            frames.append((b0 & 0x0F, bytes(buf[pos + head : stop])))
            pos = stop
        if pos:
            del buf[:pos]
        return frames


class WsProtocol(asyncio.Protocol):
    """One client WebSocket: `opened` resolves after the upgrade, `on_text` gets each
    text frame, `lost` resolves with the close code (None without a close frame)."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        self._request, self._key = handshake_request(host, port, path, headers)
        self._head: bytearray | None = bytearray()  # None once upgraded
        self._parser = FrameParser()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None

    # -- for subclasses -------------------------------------------------------------

    def on_open(self) -> None:
        """The upgrade succeeded (frames may follow at once)."""

    def on_text(self, payload: bytes) -> None:
        """One text frame from the server."""

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(payload))

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """Send a close frame and drop the connection without waiting for the echo."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(code.to_bytes(2, "big"), OP_CLOSE))
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._fail(HandshakeError(0, "response head too long"))
                return
            head, data = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head = None
            try:
                check_handshake(head, self._key)
            except HandshakeError as e:
                self._fail(e)
                return
            self.opened.set_result(None)
            self.on_open()
            if not data:
                return
        try:
            frames = self._parser.feed(data)
        except WsProtocolError as e:
            self._fail(e)
            return
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                self.on_text(payload)
            elif opcode == OP_PING and self.transport is not None:
                self.transport.write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.close_code = (
                    int.from_bytes(payload[:2], "big")
                    if len(payload) >= 2
                    else int(CloseCode.NO_STATUS)
                )
                self.close(self.close_code)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the upgrade"))
            self.opened.exception()  # the connector reports it; do not warn if unread
        if not self.lost.done():
            self.lost.set_result(self.close_code)

    def _fail(self, error: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
            self.opened.exception()
        if self.transport is not None:
            self.transport.close()
