"""Test data through the real door: batches sent over the device WebSocket, each acked."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.frames import batch_text, rfc3339

__all__ = ["EPOCH", "batched", "micros", "send_batches", "ts_text"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 500

Client = TestClient[web.Request, web.Application]


def ts_text(ts_us: int) -> str:
    """RFC 3339 with 'Z' and exactly six fraction digits, from epoch microseconds."""
    return rfc3339(EPOCH + timedelta(microseconds=ts_us))


def micros(text: str) -> int:
    """Epoch microseconds of an RFC 3339 time, however its fraction is written."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


def batched(readings: Sequence[dict[str, Any]], size: int = BATCH) -> list[list[dict[str, Any]]]:
    return [list(readings[i : i + size]) for i in range(0, len(readings), size)]


async def send_batches(
    client: Client, token: str, batches: Iterable[Sequence[dict[str, Any]]]
) -> None:
    """Send each batch as the device holding `token` and wait for its ack (so it is stored).

    Seqs continue from the device's `welcome.last_seq`, so a device can be fed repeatedly.
    """
    headers = {"Authorization": f"Bearer {token}"}
    async with client.ws_connect("/v1/devices/stream", headers=headers) as ws:
        welcome = json.loads(await ws.receive_str(timeout=5))
        assert welcome["type"] == "welcome", welcome
        seq = int(welcome["last_seq"])
        for readings in batches:
            seq += 1
            await ws.send_str(batch_text(seq, readings))
            reply = json.loads(await ws.receive_str(timeout=5))
            assert reply == {"type": "ack", "seq": seq}, reply
