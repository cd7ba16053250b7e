"""`GET /v1/devices/stream` over a real WebSocket, against a real SQLite file.

Durability is checked by reading the database file with sqlite3 after each ack, so
a test passes only if what the gateway acknowledged is really on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import msgpack
import pytest
from aiohttp import ClientWebSocketResponse, WSMessage, WSMsgType

from gateway.http.keys import ACCOUNTS, DEVICES
from gateway.settings import Settings, load_settings
from tests.support.alert_helpers import db_file
from tests.support.frames import batch, batch_bytes, reading

if TYPE_CHECKING:
    # For annotations only, which stay unevaluated: pytest loads tests/conftest.py as
    # the module `conftest`, a name mypy cannot resolve from here.
    from tests.conftest import Gateway

STREAM = "/v1/devices/stream"
# Every receive is bounded, so a gateway that never answers fails the test, not the run.
TIMEOUT = 5.0

DeviceWS = ClientWebSocketResponse[Literal[True]]


async def connect(gateway: Gateway, token: str, *, autoping: bool = True) -> DeviceWS:
    return await gateway.client.ws_connect(STREAM, headers=gateway.auth(token), autoping=autoping)


async def receive_json(ws: DeviceWS) -> dict[str, Any]:
    """The next frame, which must be JSON text."""
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def receive_packed(ws: DeviceWS) -> dict[str, Any]:
    """The next frame, which must be MessagePack binary."""
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.BINARY, msg
    data: dict[str, Any] = msgpack.unpackb(msg.data)
    return data


async def receive_close(ws: DeviceWS, within: float = TIMEOUT) -> WSMessage:
    """The close frame the gateway sends next (no data frame may come before it)."""
    msg = await ws.receive(timeout=within)
    assert msg.type is WSMsgType.CLOSE, msg
    return msg


async def open_stream(gateway: Gateway, token: str) -> tuple[DeviceWS, dict[str, Any]]:
    """A connected device and the welcome it got."""
    ws = await connect(gateway, token)
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    return ws, welcome


async def send_and_ack(ws: DeviceWS, message: dict[str, Any]) -> None:
    await ws.send_json(message)
    assert await receive_json(ws) == {"type": "ack", "seq": message["seq"]}


def stored(gateway: Gateway, device_id: str) -> list[tuple[int, str, int, float]]:
    """(seq, metric, ts_us, value) of the device's readings in the database file."""
    with closing(sqlite3.connect(db_file(gateway))) as db:
        rows = db.execute(
            "SELECT seq, metric, ts_us, value FROM readings WHERE device_id = ? ORDER BY id",
            (device_id,),
        ).fetchall()
    return [tuple(r) for r in rows]


def stored_last_seq(gateway: Gateway, device_id: str) -> int:
    with closing(sqlite3.connect(db_file(gateway))) as db:
        (last_seq,) = db.execute(
            "SELECT last_seq FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
    assert isinstance(last_seq, int)
    return last_seq


@pytest.fixture
async def token(gateway: Gateway) -> str:
    """The token of device watch-001, worn by patient p-017."""
    return await gateway.add_device("watch-001", "p-017")


class TestWelcome:
    async def test_fresh_device_is_welcomed_with_last_seq_zero(
        self, gateway: Gateway, token: str
    ) -> None:
        """A device with nothing stored is welcomed with its identity, last_seq 0 and max_batch."""
        ws = await connect(gateway, token)
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is WSMsgType.TEXT
        assert json.loads(msg.data) == {
            "type": "welcome",
            "device_id": "watch-001",
            "patient_id": "p-017",
            "last_seq": 0,
            "max_batch": 500,
        }

    async def test_reconnect_is_welcomed_with_highest_acked_seq(
        self, gateway: Gateway, token: str
    ) -> None:
        """After acks and a reconnect, welcome.last_seq is the highest acked seq (gaps allowed)."""
        ws, _ = await open_stream(gateway, token)
        for seq in (1, 2, 7):
            await send_and_ack(ws, batch(seq))
        await ws.close()
        _, welcome = await open_stream(gateway, token)
        assert welcome["last_seq"] == 7


class TestCompression:
    async def test_permessage_deflate_is_declined(self, gateway: Gateway, token: str) -> None:
        """A device that offers permessage-deflate is answered without it: no connection
        carries a deflate context, and acks go out as they are."""
        ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token), compress=15)
        assert ws.compress == 0
        await receive_json(ws)  # the welcome, uncompressed
        await ws.close()


class TestAcks:
    async def test_each_ack_comes_after_its_rows_are_in_the_database(
        self, gateway: Gateway, token: str
    ) -> None:
        """When an ack arrives, its batch's rows and last_seq are already in the SQLite file."""
        ws, _ = await open_stream(gateway, token)
        expected: list[tuple[int, str, int, float]] = []
        for seq in range(1, 6):
            readings = [reading(value=60 + seq), reading(metric="spo2", value=90 + seq)]
            await send_and_ack(ws, batch(seq, readings))
            ts_us = 1_795_698_000_250_000  # 2026-11-26T13:00:00.250Z
            expected += [(seq, "heart_rate", ts_us, 60.0 + seq), (seq, "spo2", ts_us, 90.0 + seq)]
            assert stored(gateway, "watch-001") == expected
            assert stored_last_seq(gateway, "watch-001") == seq

    async def test_offset_timestamp_is_stored_as_utc(self, gateway: Gateway, token: str) -> None:
        """A +05:30 timestamp is stored as the UTC instant, exact to the microsecond."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(1, [reading(ts="2026-11-26T18:30:00.000001+05:30")]))
        assert [r[2] for r in stored(gateway, "watch-001")] == [1_795_698_000_000_001]

    async def test_duplicate_seq_is_acked_and_not_stored_again(
        self, gateway: Gateway, token: str
    ) -> None:
        """A resent or lower seq is acked again and stores nothing, even with other content."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(1, [reading(value=70)]))
        await send_and_ack(ws, batch(2, [reading(value=71)]))
        await send_and_ack(ws, batch(2, [reading(value=99), reading(value=98)]))
        await send_and_ack(ws, batch(1, [reading(value=97)]))
        assert [(r[0], r[3]) for r in stored(gateway, "watch-001")] == [(1, 70.0), (2, 71.0)]

    async def test_duplicate_on_a_new_connection_is_not_stored_again(
        self, gateway: Gateway, token: str
    ) -> None:
        """A batch resent after reconnecting (its ack was lost) is acked and stored once."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(3))
        await ws.close()
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(3))
        assert [r[0] for r in stored(gateway, "watch-001")] == [3]

    async def test_same_metric_and_ts_in_different_batches_are_both_kept(
        self, gateway: Gateway, token: str
    ) -> None:
        """Readings are never merged: equal device/metric/ts in two batches gives two rows."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(1, [reading(value=72)]))
        await send_and_ack(ws, batch(2, [reading(value=73)]))
        assert [(r[0], r[2], r[3]) for r in stored(gateway, "watch-001")] == [
            (1, 1_795_698_000_250_000, 72.0),
            (2, 1_795_698_000_250_000, 73.0),
        ]

    async def test_pipelined_batches_are_acked_in_order_and_all_stored(
        self, gateway: Gateway, token: str
    ) -> None:
        """50 batches sent without waiting are all acked, in sending order, and all stored."""
        ws, _ = await open_stream(gateway, token)
        for seq in range(1, 51):
            await ws.send_json(batch(seq, [reading(value=seq)]))
        acks = [await receive_json(ws) for _ in range(50)]
        assert acks == [{"type": "ack", "seq": seq} for seq in range(1, 51)]
        assert [(r[0], r[3]) for r in stored(gateway, "watch-001")] == [
            (seq, float(seq)) for seq in range(1, 51)
        ]

    async def test_answers_of_every_kind_keep_sending_order(
        self, gateway: Gateway, token: str
    ) -> None:
        """Pipelined acks, duplicates and errors come back in the order their frames were sent."""
        ws, _ = await open_stream(gateway, token)
        frames: list[str] = [
            json.dumps(batch(1)),
            json.dumps(batch(2, [reading(value=-1)])),
            "not json",
            json.dumps(batch(2)),
            json.dumps(batch(1)),
            json.dumps(batch(3)),
        ]
        for frame in frames:
            await ws.send_str(frame)
        answers = [await receive_json(ws) for _ in frames]
        assert [(a["type"], a.get("seq"), a.get("code")) for a in answers] == [
            ("ack", 1, None),
            ("error", 2, "invalid_batch"),
            ("error", None, "bad_message"),
            ("ack", 2, None),
            ("ack", 1, None),
            ("ack", 3, None),
        ]
        assert [r[0] for r in stored(gateway, "watch-001")] == [1, 2, 3]

    async def test_batch_of_exactly_max_batch_is_accepted(
        self, gateway: Gateway, token: str
    ) -> None:
        """A batch of max_batch readings (from welcome) is acked and fully stored."""
        ws, welcome = await open_stream(gateway, token)
        max_batch = welcome["max_batch"]
        await send_and_ack(ws, batch(1, [reading(value=i % 300) for i in range(max_batch)]))
        assert len(stored(gateway, "watch-001")) == max_batch

    async def test_batch_over_max_batch_is_rejected_at_readings(
        self, gateway: Gateway, token: str
    ) -> None:
        """A batch of max_batch+1 readings is invalid_batch at ["readings"], nothing stored."""
        ws, welcome = await open_stream(gateway, token)
        await ws.send_json(batch(1, [reading()] * (welcome["max_batch"] + 1)))
        error = await receive_json(ws)
        assert error["code"] == "invalid_batch"
        assert error["seq"] == 1
        assert [e["loc"] for e in error["errors"]] == [["readings"]]
        assert stored(gateway, "watch-001") == []


class TestInvalidBatch:
    async def test_invalid_batch_lists_every_problem_and_stores_nothing(
        self, gateway: Gateway, token: str
    ) -> None:
        """An invalid batch is answered with every problem located, and none of it is stored."""
        ws, _ = await open_stream(gateway, token)
        readings = [
            reading(),
            reading(metric="spo2", value=101),
            reading(ts="2026-11-26T13:00:00"),
            reading(value="72"),
            reading(unit="bpm"),
            reading(metric="temperature", value=37, unit="Cel", colour="red"),
            reading(ts="2099-01-01T00:00:00Z"),
        ]
        await ws.send_json(batch(1, readings))
        error = await receive_json(ws)
        assert error["type"] == "error"
        assert error["code"] == "invalid_batch"
        assert error["seq"] == 1
        assert [e["loc"] for e in error["errors"]] == [
            ["readings", 1, "value"],
            ["readings", 2, "ts"],
            ["readings", 3, "value"],
            ["readings", 4, "unit"],
            ["readings", 5, "colour"],
            ["readings", 6, "ts"],
        ]
        assert all(isinstance(e["msg"], str) and e["msg"] for e in error["errors"])
        assert stored(gateway, "watch-001") == []
        assert stored_last_seq(gateway, "watch-001") == 0

    async def test_rejected_seq_is_not_used_up(self, gateway: Gateway, token: str) -> None:
        """After an invalid batch the connection is usable and the same seq is then accepted."""
        ws, _ = await open_stream(gateway, token)
        await ws.send_json(batch(1, [reading(value=-5)]))
        assert (await receive_json(ws))["code"] == "invalid_batch"
        await send_and_ack(ws, batch(1, [reading(value=5)]))
        assert [(r[0], r[3]) for r in stored(gateway, "watch-001")] == [(1, 5.0)]

    async def test_empty_batch_is_rejected_at_readings(self, gateway: Gateway, token: str) -> None:
        """A batch without readings is invalid_batch located at ["readings"]."""
        ws, _ = await open_stream(gateway, token)
        await ws.send_json({"type": "readings", "seq": 1, "readings": []})
        error = await receive_json(ws)
        assert (error["code"], [e["loc"] for e in error["errors"]]) == (
            "invalid_batch",
            [["readings"]],
        )

    @pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
    async def test_batch_with_no_readings_field_is_answered_and_the_stream_kept(
        self, gateway: Gateway, token: str, binary: bool
    ) -> None:
        """`{"type":"readings","seq":4}` gets invalid_batch for seq 4 at ["readings"], in the
        frame's encoding, and the same socket then acks a valid batch."""
        ws, _ = await open_stream(gateway, token)
        no_readings = {"type": "readings", "seq": 4}
        if binary:
            await ws.send_bytes(msgpack.packb(no_readings))
            error = await receive_packed(ws)
        else:
            await ws.send_json(no_readings)
            error = await receive_json(ws)
        assert error == {
            "type": "error",
            "seq": 4,
            "code": "invalid_batch",
            "errors": [{"loc": ["readings"], "msg": "Field required"}],
        }
        await send_and_ack(ws, batch(4))
        assert [row[0] for row in stored(gateway, "watch-001")] == [4]


BAD_FRAMES: dict[str, str | bytes] = {
    "invalid JSON": "{not json",
    "JSON array": "[1, 2, 3]",
    "JSON string": '"readings"',
    "JSON number": "42",
    "missing type": json.dumps({"seq": 1, "readings": [reading()]}),
    "unknown type": json.dumps({**batch(1), "type": "hello"}),
    "missing seq": json.dumps({"type": "readings", "readings": [reading()]}),
    "seq 0": json.dumps(batch(0)),
    'seq "3"': json.dumps({**batch(1), "seq": "3"}),
    "seq 2.5": json.dumps({**batch(1), "seq": 2.5}),
    "corrupt MessagePack": b"\xc1\xc1\xc1",
    "truncated MessagePack": b"\x93\x01",
    "MessagePack array": msgpack.packb([1, 2]),
    "MessagePack without seq": msgpack.packb({"type": "readings", "readings": [reading()]}),
}


class TestBadMessage:
    async def test_every_bad_frame_kind_is_answered_and_the_connection_kept(
        self, gateway: Gateway, token: str
    ) -> None:
        """Each kind of non-batch frame gets bad_message in its own encoding, on one stream
        that stays open and then stores a valid batch."""
        ws, _ = await open_stream(gateway, token)
        for kind, frame in BAD_FRAMES.items():
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
                answer = await receive_packed(ws)
            else:
                await ws.send_str(frame)
                answer = await receive_json(ws)
            assert set(answer) == {"type", "code", "detail"}, kind
            assert (answer["type"], answer["code"]) == ("error", "bad_message"), kind
            assert isinstance(answer["detail"], str), kind
            assert answer["detail"], kind
        await send_and_ack(ws, batch(1))
        assert [r[0] for r in stored(gateway, "watch-001")] == [1]


class TestEncodings:
    async def test_replies_follow_the_encoding_the_device_last_used(
        self, gateway: Gateway, token: str
    ) -> None:
        """MessagePack frames are answered in MessagePack, JSON frames in JSON, on one stream."""
        ws, _ = await open_stream(gateway, token)
        await ws.send_bytes(batch_bytes(1))
        assert await receive_packed(ws) == {"type": "ack", "seq": 1}
        await ws.send_json(batch(2))
        assert await receive_json(ws) == {"type": "ack", "seq": 2}
        await ws.send_bytes(batch_bytes(2))
        assert await receive_packed(ws) == {"type": "ack", "seq": 2}
        await ws.send_bytes(batch_bytes(3, [reading(value=1000)]))
        error = await receive_packed(ws)
        assert (error["code"], error["seq"]) == ("invalid_batch", 3)
        assert error["errors"][0]["loc"] == ["readings", 0, "value"]
        await ws.send_json(batch(3))
        assert await receive_json(ws) == {"type": "ack", "seq": 3}
        assert [r[0] for r in stored(gateway, "watch-001")] == [1, 2, 3]

    async def test_pipelined_mixed_encodings_keep_their_own_encoding(
        self, gateway: Gateway, token: str
    ) -> None:
        """Alternating encodings sent without waiting: each ack matches its batch's encoding."""
        ws, _ = await open_stream(gateway, token)
        for seq in range(1, 11):
            if seq % 2:
                await ws.send_bytes(batch_bytes(seq))
            else:
                await ws.send_json(batch(seq))
        for seq in range(1, 11):
            receive = receive_packed if seq % 2 else receive_json
            assert await receive(ws) == {"type": "ack", "seq": seq}


async def handshake_status(gateway: Gateway, headers: dict[str, str]) -> int:
    """The HTTP status of a WebSocket upgrade refused by the gateway."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gateway.client.ws_connect(STREAM, headers=headers)
    return info.value.status


class TestAuth:
    async def test_no_token_is_401_without_upgrade(self, gateway: Gateway) -> None:
        """Without Authorization the upgrade is refused with 401 and a JSON error body."""
        upgrade = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with gateway.client.get(STREAM, headers=upgrade) as resp:
            assert resp.status == 401
            assert "Sec-WebSocket-Accept" not in resp.headers
            assert (await resp.json())["error"] == "unauthorized"
        assert await handshake_status(gateway, {}) == 401

    @pytest.mark.parametrize(
        "authorization", ["Bearer not-a-real-token", "Bearer ", "Basic d2F0Y2g6MDAx", "garbage"]
    )
    async def test_unknown_token_is_401(self, gateway: Gateway, authorization: str) -> None:
        """A garbage, empty or non-bearer credential is refused with 401."""
        await gateway.add_device("watch-001", "p-017")
        assert await handshake_status(gateway, {"Authorization": authorization}) == 401

    async def test_revoked_token_is_401(self, gateway: Gateway, token: str) -> None:
        """A device token revoked in the database no longer opens a stream."""
        await gateway.app[ACCOUNTS].revoke_device("watch-001")
        assert await handshake_status(gateway, gateway.auth(token)) == 401

    async def test_user_tokens_are_403(self, gateway: Gateway) -> None:
        """A clinician's or admin's valid token is forbidden on the device stream."""
        assert await handshake_status(gateway, gateway.auth(gateway.clinician_token)) == 403
        assert await handshake_status(gateway, gateway.auth(gateway.admin_token)) == 403

    async def test_identity_comes_from_the_token_alone(self, gateway: Gateway, token: str) -> None:
        """Each device's stream is its own token's: the welcome and the rows carry that identity."""
        other = await gateway.add_device("watch-002", "p-099")
        ws, welcome = await open_stream(gateway, other)
        assert (welcome["device_id"], welcome["patient_id"]) == ("watch-002", "p-099")
        await send_and_ack(ws, batch(1))
        assert len(stored(gateway, "watch-002")) == 1
        assert stored(gateway, "watch-001") == []


class TestReplacement:
    async def test_second_connection_replaces_the_first(self, gateway: Gateway, token: str) -> None:
        """The older stream is closed 4001 "replaced"; the new one counts its acks and works."""
        old, _ = await open_stream(gateway, token)
        for seq in (1, 2, 3):
            await send_and_ack(old, batch(seq))
        new = await connect(gateway, token)
        closed = await receive_close(old)
        assert (closed.data, closed.extra) == (4001, "replaced")
        welcome = await receive_json(new)
        assert welcome["type"] == "welcome"
        assert welcome["last_seq"] == 3
        await send_and_ack(new, batch(4))
        assert [r[0] for r in stored(gateway, "watch-001")] == [1, 2, 3, 4]

    async def test_replaced_mid_flight_then_resent_stores_every_batch_once(
        self, gateway: Gateway, token: str
    ) -> None:
        """Replaced with batches in flight: the new welcome counts every ack the old stream
        got, and resending from it stores each batch exactly once."""
        old, _ = await open_stream(gateway, token)
        for seq in range(1, 21):
            await old.send_json(batch(seq))
        new = await connect(gateway, token)
        acked: list[int] = []
        while (msg := await old.receive(timeout=TIMEOUT)).type is WSMsgType.TEXT:
            acked.append(json.loads(msg.data)["seq"])
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 4001)
        assert acked == list(range(1, len(acked) + 1))
        last_seq = (await receive_json(new))["last_seq"]
        assert last_seq >= len(acked)
        # The device resends everything after last_seq, some of which the old stream
        # may still have in flight: the writer must store those once.
        for seq in range(last_seq + 1, 21):
            await new.send_json(batch(seq))
        for seq in range(last_seq + 1, 21):
            assert await receive_json(new) == {"type": "ack", "seq": seq}
        assert sorted(r[0] for r in stored(gateway, "watch-001")) == list(range(1, 21))


class TestRevocation:
    async def test_revoke_through_admin_api_closes_the_stream_at_once(
        self, gateway: Gateway, token: str
    ) -> None:
        """DELETE /v1/devices/{id} closes the device's open stream with 4003 "revoked"."""
        ws, _ = await open_stream(gateway, token)

        async def revoke() -> int:
            resp = await gateway.client.delete(
                "/v1/devices/watch-001", headers=gateway.auth(gateway.admin_token)
            )
            return resp.status

        status, closed = await asyncio.gather(revoke(), receive_close(ws))
        assert status == 204
        assert (closed.data, closed.extra) == (4003, "revoked")
        assert await handshake_status(gateway, gateway.auth(token)) == 401

    async def test_revoke_in_the_database_closes_the_stream_soon(
        self, gateway: Gateway, token: str
    ) -> None:
        """Revoking through AccountStore (as the CLI does) closes the stream within 2 s."""
        ws, _ = await open_stream(gateway, token)
        await gateway.app[ACCOUNTS].revoke_device("watch-001")
        closed = await receive_close(ws, within=2.0)
        assert (closed.data, closed.extra) == (4003, "revoked")

    async def test_revoking_one_device_leaves_others_open(
        self, gateway: Gateway, token: str
    ) -> None:
        """Only the revoked device's stream is closed; another device keeps streaming."""
        other, _ = await open_stream(gateway, await gateway.add_device("watch-002", "p-099"))
        ws, _ = await open_stream(gateway, token)
        await gateway.app[ACCOUNTS].revoke_device("watch-001")
        await receive_close(ws, within=2.0)
        await send_and_ack(other, batch(1))


class TestHeartbeat:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        """The shared test settings with fast heartbeats: a silent peer is found out at once."""
        return load_settings(**(settings.model_dump() | {"heartbeat_s": 0.3}))

    async def test_peer_that_never_pongs_is_closed(self, gateway: Gateway, token: str) -> None:
        """A device that never answers pings is disconnected within a few heartbeats."""
        ws = await connect(gateway, token, autoping=False)
        assert (await receive_json(ws))["type"] == "welcome"
        pings = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while True:
            msg = await ws.receive(timeout=max(deadline - loop.time(), 0.01))
            if msg.type is WSMsgType.PING:
                pings += 1
                continue
            break
        assert pings >= 1
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), msg
        assert loop.time() < deadline

    async def test_a_device_ping_is_answered(self, gateway: Gateway, token: str) -> None:
        """A device's own ping gets a pong with the same payload."""
        ws = await connect(gateway, token, autoping=False)
        assert (await receive_json(ws))["type"] == "welcome"
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are-you-there")
        await ws.close()

    async def test_peer_that_pongs_stays_open(self, gateway: Gateway, token: str) -> None:
        """A device that answers pings stays connected over several heartbeats."""
        ws, _ = await open_stream(gateway, token)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def send_later() -> None:
            await asyncio.sleep(1.2)  # four heartbeats
            await ws.send_json(batch(1))

        # Pings are answered inside receive, so keep one pending until the ack comes.
        sender = asyncio.create_task(send_later())
        assert await receive_json(ws) == {"type": "ack", "seq": 1}
        await sender
        assert loop.time() - started >= 1.2


class TestSeqLimits:
    async def test_largest_64_bit_seq_is_stored(self, gateway: Gateway, token: str) -> None:
        """seq 2**63-1, the largest the database holds, is acked and stored."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(2**63 - 1))
        assert stored_last_seq(gateway, "watch-001") == 2**63 - 1

    async def test_seq_beyond_64_bits_is_bad_message(self, gateway: Gateway, token: str) -> None:
        """A seq the database cannot hold is answered bad_message and the stream stays usable."""
        ws, _ = await open_stream(gateway, token)
        await ws.send_json(batch(2**63))
        answer = await receive_json(ws)
        assert (answer["type"], answer["code"]) == ("error", "bad_message")
        await send_and_ack(ws, batch(1))


class TestDisconnect:
    async def test_device_that_disconnects_leaves_the_registry(
        self, gateway: Gateway, token: str
    ) -> None:
        """A stream the device closes is detached, even though aiohttp cancels its handler."""
        ws, _ = await open_stream(gateway, token)
        await ws.close()
        for _ in range(100):  # up to 2 s
            if not len(gateway.app[DEVICES]):
                break
            await asyncio.sleep(0.02)
        assert len(gateway.app[DEVICES]) == 0

    async def test_reconnect_after_disconnect_is_welcomed_at_once(
        self, gateway: Gateway, token: str
    ) -> None:
        """A device reconnecting after closing is welcomed without waiting on its old stream."""
        ws, _ = await open_stream(gateway, token)
        await send_and_ack(ws, batch(1))
        await ws.close()
        ws = await connect(gateway, token)
        msg = await ws.receive(timeout=2.0)  # a stale old stream would cost 5 s
        assert msg.type is WSMsgType.TEXT
        assert json.loads(msg.data)["last_seq"] == 1
