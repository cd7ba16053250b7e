"""Fuzzing the device protocol over a real socket against a real `vitals serve`.

Random and mutated frames — broken JSON, wrong types, huge numbers, deep nesting,
random bytes, valid batches with one poisoned reading — never crash the gateway,
never get a poisoned batch stored, are always answered per the protocol, and a
well-behaved device on another connection is served all the while.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import VITALS, GatewayProcess

pytestmark = pytest.mark.e2e

TS = "2026-11-26T13:00:00Z"
GOOD = {"ts": TS, "metric": "spo2", "value": 97}
POISON = [
    {"ts": TS, "metric": "spo2", "value": 101},
    {"ts": TS, "metric": "spo2", "value": math.nan},
    {"ts": TS, "metric": "spo2", "value": "97"},
    {"ts": TS, "metric": "spo2", "value": True},
    {"ts": TS, "metric": "glucose", "value": 5},
    {"ts": "yesterday", "metric": "spo2", "value": 97},
    {"ts": 1764162000, "metric": "spo2", "value": 97},
    {"ts": "2999-01-01T00:00:00Z", "metric": "spo2", "value": 97},
    {"ts": TS, "metric": "spo2", "value": 97, "unit": "bpm"},
    {"ts": TS, "metric": "spo2", "value": 97, "extra": 1},
    {"ts": TS, "metric": "spo2", "value": 1e308},
    {"ts": TS, "metric": "spo2"},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def poisoned_batch(draw: st.DrawFn) -> dict[str, Any]:
    """A batch of good readings with exactly one poisoned among them."""
    goods = draw(st.integers(0, 5))
    at = draw(st.integers(0, goods))
    readings: list[Any] = [GOOD] * goods
    readings.insert(at, draw(st.sampled_from(POISON)))
    return {"type": "readings", "seq": 1, "readings": readings}


def _frames() -> st.SearchStrategy[str | bytes]:
    as_json = st.builds(json.dumps, json_values)
    broken = st.builds(
        lambda doc, cut: doc[: max(1, len(doc) - cut)],
        st.just(json.dumps({"type": "readings", "seq": 1, "readings": [GOOD]})),
        st.integers(1, 40),
    )
    poisoned_text = st.builds(lambda b: json.dumps(b, allow_nan=True), poisoned_batch())
    poisoned_binary = st.builds(msgpack.packb, poisoned_batch())
    nested = st.integers(100, 20_000).map(lambda n: "[" * n + "]" * n)
    huge = st.sampled_from(
        [
            '{"type":"readings","seq":1e400,"readings":[]}',
            '{"type":"readings","seq":' + "9" * 400 + "}",
        ]
    )
    return st.one_of(
        as_json,
        broken,
        poisoned_text,
        poisoned_binary,
        nested,
        huge,
        st.binary(max_size=200),
        st.text(max_size=200),
    )


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    """One gateway for all examples, a fuzzing device, and a well-behaved simulator."""
    tmp = tmp_path_factory.mktemp("fuzz")
    gw = GatewayProcess(db=tmp / "vitals.db", log_dir=tmp)
    fuzzer = gw.provision_device("fuzzer", "p-fuzz")["token"]
    good = gw.provision_device("good-001", "p-good")
    tokens = tmp / "tokens.jsonl"
    tokens.write_text(json.dumps(good) + "\n")
    gw.start()
    with (tmp / "simulate.log").open("wb") as log:
        sim = subprocess.Popen(
            [
                *VITALS,
                "simulate",
                "--url",
                gw.url,
                "--tokens",
                str(tokens),
                "--rate",
                "5",
                "--duration",
                "600",
                "--acked-log",
                str(tmp / "acked.jsonl"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    acked_log = tmp / "acked.jsonl"

    def acked() -> int:
        return len(acked_log.read_text().splitlines()) if acked_log.exists() else 0

    try:
        deadline = time.monotonic() + 30
        while acked() < 2:
            assert time.monotonic() < deadline, "the well-behaved device never got going"
            time.sleep(0.2)
        at_start = acked()
        yield gw, fuzzer
        time.sleep(1.0)  # at 5 batches/s, a served device gets several more acks
        assert sim.poll() is None, "the well-behaved device's simulator died"
        assert gw.proc is not None
        assert gw.proc.poll() is None, "the gateway crashed"
        assert acked() > at_start, "the well-behaved device was not served meanwhile"
    finally:
        sim.terminate()
        sim.wait(timeout=15)
        gw.close()


async def _send_one(url: str, token: str, frame: str | bytes) -> tuple[str, Any]:
    """Send one frame on a fresh connection; the gateway's one answer to it."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{url}/v1/devices/stream", headers={"Authorization": f"Bearer {token}"}
        ) as ws,
    ):
        welcome = await ws.receive_json(timeout=5)
        assert welcome["type"] == "welcome"
        await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        msg = await ws.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return "text", json.loads(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return "binary", msgpack.unpackb(msg.data)
        return "close", msg.data


def _stored(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        count: int = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id = 'fuzzer'"
        ).fetchone()[0]
        return count


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=_frames())
def test_no_frame_crashes_the_gateway_or_stores_a_poisoned_batch(
    fuzz_target: tuple[GatewayProcess, str], frame: str | bytes
) -> None:
    """Whatever the frame, the answer is an ack (of a valid batch only), a protocol
    error, or close 1009 for an oversized frame; nothing of a refused batch is stored."""
    gw, token = fuzz_target
    before = _stored(gw.db)
    kind, answer = asyncio.run(_send_one(gw.url, token, frame))
    if kind == "close":
        assert answer == 1009, answer
        assert len(frame) > 262_144
    elif answer["type"] == "ack":
        assert isinstance(frame, str | bytes)
        decoded = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
        assert all(r == GOOD for r in decoded["readings"]), "a poisoned batch was acked"
    else:
        assert answer["type"] == "error"
        assert answer["code"] in {"bad_message", "invalid_batch"}
        assert answer.get("detail") or answer.get("errors")
        assert "Traceback" not in json.dumps(answer)
        assert _stored(gw.db) == before, "a refused batch left readings behind"
