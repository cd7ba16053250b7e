"""Frames encoded once and written whole: what aiohttp's client reads back."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from gateway.services.frames import FrameSender, binary_frame, text_frame
from tests.conftest import AiohttpClient


def test_lengths_are_encoded_in_all_three_header_forms() -> None:
    """7-bit, 16-bit and 64-bit payload lengths, FIN set, no mask (RFC 6455 §5.2)."""
    assert text_frame("hi") == b"\x81\x02hi"
    assert binary_frame(b"\x00" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert text_frame("x" * 70_000)[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big")


async def test_frames_written_in_one_go_arrive_as_separate_messages(
    aiohttp_client: AiohttpClient,
) -> None:
    """Frames of each length class, concatenated into one write, reach the client as
    that many messages, in order; nothing is written once the socket closes."""
    texts = ["small", "é" * 200, "z" * 70_000]
    done = asyncio.Event()
    late_write: list[bool] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        out = FrameSender(ws, request)
        assert out.write(b"".join(text_frame(t) for t in texts) + binary_frame(b"\x01\x02"))
        await ws.receive()  # the client's close
        late_write.append(out.write(text_frame("after close")))
        done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        got = [await ws.receive(timeout=5) for _ in range(4)]
    await asyncio.wait_for(done.wait(), 5)
    assert [m.data for m in got[:3]] == texts
    assert all(m.type is WSMsgType.TEXT for m in got[:3])
    assert (got[3].type, got[3].data) == (WSMsgType.BINARY, b"\x01\x02")
    assert late_write == [False]
