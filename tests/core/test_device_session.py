"""DeviceSession without a socket: frames in, Store/Duplicate/Reject out."""

from __future__ import annotations

import calendar
import json
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings

from gateway.core.session import DeviceSession, Duplicate, Reject, Store, encode, encode_ack
from schemas.codes import DeviceErrorCode
from schemas.device import Ack, BadMessage, BatchError
from tests.support.frame_strategies import Frame, device_frames
from tests.support.frame_strategies import encode as encode_fuzzed
from tests.support.frames import TS, batch, batch_bytes, batch_text, reading

NOW = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)


def text(message: Any) -> str:
    return json.dumps(message)


def packed(message: Any) -> bytes:
    data: bytes = msgpack.packb(message)
    return data


def session(last_seq: int = 0, max_batch: int = 500) -> DeviceSession:
    return DeviceSession("watch-001", "p-017", last_seq=last_seq, max_batch=max_batch)


def bad_message(outcome: object) -> BadMessage:
    """The outcome as a bad_message rejection (fails the test if it is anything else)."""
    assert isinstance(outcome, Reject)
    assert isinstance(outcome.message, BadMessage)
    assert outcome.message.code is DeviceErrorCode.BAD_MESSAGE
    return outcome.message


def batch_error(outcome: object) -> BatchError:
    assert isinstance(outcome, Reject)
    assert isinstance(outcome.message, BatchError)
    return outcome.message


class TestWelcome:
    def test_welcome_is_json_with_last_seq_and_max_batch(self) -> None:
        """The welcome frame is JSON text carrying identity, last_seq and max_batch."""
        assert json.loads(session(last_seq=41, max_batch=200).welcome()) == {
            "type": "welcome",
            "device_id": "watch-001",
            "patient_id": "p-017",
            "last_seq": 41,
            "max_batch": 200,
        }


class TestOutcomes:
    def test_valid_new_batch_is_stored_with_one_row_per_reading(self) -> None:
        """A new valid batch yields Store with a row per reading, tagged with device and seq."""
        s = session()
        outcome = s.receive(batch_text(1, [reading(), reading(metric="spo2", value=97.5)]), NOW)
        assert isinstance(outcome, Store)
        assert (outcome.seq, outcome.binary) == (1, False)
        # (device_id, patient_id, metric, ts_us, value, received_us, seq)
        assert [(r[2], r[4], r[6]) for r in outcome.rows] == [
            ("heart_rate", 72.0, 1),
            ("spo2", 97.5, 1),
        ]
        assert {(r[0], r[1]) for r in outcome.rows} == {("watch-001", "p-017")}
        assert s.accepted_seq == 1

    def test_seq_at_or_below_last_is_duplicate_even_with_other_content(self) -> None:
        """A seq at or below the accepted one is a Duplicate, whatever the batch holds."""
        s = session(last_seq=5)
        assert s.receive(batch_text(5, [reading(value=99)]), NOW) == Duplicate(5, False)
        assert s.receive(batch_text(3), NOW) == Duplicate(3, False)
        assert s.accepted_seq == 5

    def test_batch_is_handed_out_for_storage_once_per_session(self) -> None:
        """Resending an accepted seq in the same session is a Duplicate, not a second Store."""
        s = session()
        assert isinstance(s.receive(batch_text(1), NOW), Store)
        assert s.receive(batch_text(1), NOW) == Duplicate(1, False)

    def test_gaps_in_seq_are_allowed(self) -> None:
        """seq only has to increase: 1 then 7 are both stored, then 4 is a duplicate."""
        s = session()
        assert isinstance(s.receive(batch_text(1), NOW), Store)
        assert isinstance(s.receive(batch_text(7), NOW), Store)
        assert isinstance(s.receive(batch_text(4), NOW), Duplicate)

    def test_invalid_batch_is_rejected_with_every_problem(self) -> None:
        """An invalid batch yields invalid_batch carrying its seq and one error per problem."""
        readings = [
            reading(),
            reading(value=400),
            reading(unit="bpm"),
            reading(ts="2026-11-26T13:00:00"),
            reading(colour="red"),
        ]
        error = batch_error(session().receive(batch_text(3, readings), NOW))
        assert error.seq == 3
        assert error.code is DeviceErrorCode.INVALID_BATCH
        assert [e.loc for e in error.errors] == [
            ["readings", 1, "value"],
            ["readings", 2, "unit"],
            ["readings", 3, "ts"],
            ["readings", 4, "colour"],
        ]
        assert all(e.msg for e in error.errors)

    def test_invalid_batch_does_not_use_up_its_seq(self) -> None:
        """After a rejected seq 3, a valid seq 3 is stored, not treated as a duplicate."""
        s = session(last_seq=2)
        batch_error(s.receive(batch_text(3, [reading(value="72")]), NOW))
        assert s.accepted_seq == 2
        assert isinstance(s.receive(batch_text(3), NOW), Store)

    def test_timestamp_ahead_of_now_is_rejected_against_the_clock_passed_in(self) -> None:
        """`now` is the session's only clock: 5 min ahead passes, a second more fails at ts."""
        s = session()
        assert isinstance(
            s.receive(batch_text(1, [reading(ts="2026-11-26T13:10:00Z")]), NOW), Store
        )
        error = batch_error(s.receive(batch_text(2, [reading(ts="2026-11-26T13:10:01Z")]), NOW))
        assert [e.loc for e in error.errors] == [["readings", 0, "ts"]]

    def test_max_batch_of_the_session_is_enforced(self) -> None:
        """A session built with max_batch=2 stores 2 readings and rejects 3 at ["readings"]."""
        s = session(max_batch=2)
        assert isinstance(s.receive(batch_text(1, [reading()] * 2), NOW), Store)
        error = batch_error(s.receive(batch_text(2, [reading()] * 3), NOW))
        assert [e.loc for e in error.errors] == [["readings"]]

    def test_oversized_batch_reports_its_other_problems_too(self) -> None:
        """An oversized batch lists its size problem and every reading's problem together."""
        s = session(max_batch=2)
        error = batch_error(
            s.receive(batch_text(1, [reading(), reading(value=-1), reading()]), NOW)
        )
        assert [e.loc for e in error.errors] == [["readings"], ["readings", 1, "value"]]

    def test_empty_batch_is_invalid_at_readings(self) -> None:
        """A batch with no readings is invalid_batch located at ["readings"]."""
        error = batch_error(
            session().receive(text({"type": "readings", "seq": 1, "readings": []}), NOW)
        )
        assert [e.loc for e in error.errors] == [["readings"]]


class TestTimestamps:
    def test_offset_timestamp_is_stored_as_exact_utc_microseconds(self) -> None:
        """+05:30 local time becomes the exact UTC instant in integer microseconds."""
        outcome = session().receive(
            batch_text(1, [reading(ts="2026-11-26T18:30:00.123457+05:30")]), NOW
        )
        assert isinstance(outcome, Store)
        utc_seconds = calendar.timegm((2026, 11, 26, 13, 0, 0))
        assert outcome.rows[0][3] == utc_seconds * 1_000_000 + 123_457

    def test_readings_sharing_or_changing_timestamps_each_get_their_own_instant(self) -> None:
        """Consecutive readings at one instant (also written in two offsets) share its
        microseconds, and a reading at another instant, before or after them, has its own."""
        stamps = [
            "2026-11-26T13:00:00.000001Z",
            "2026-11-26T18:30:00.000001+05:30",  # the same instant
            "2026-11-26T13:00:00.000002Z",
            "2026-11-26T13:00:00.000002Z",
            "2026-11-26T13:00:00.000001Z",
        ]
        outcome = session().receive(batch_text(1, [reading(ts=ts) for ts in stamps]), NOW)
        assert isinstance(outcome, Store)
        base = calendar.timegm((2026, 11, 26, 13, 0, 0)) * 1_000_000
        assert [row[3] - base for row in outcome.rows] == [1, 1, 2, 2, 1]

    def test_received_time_is_now(self) -> None:
        """Each row's received_us is the `now` given to receive."""
        outcome = session().receive(batch_text(), NOW)
        assert isinstance(outcome, Store)
        assert outcome.rows[0][5] == calendar.timegm((2026, 11, 26, 13, 5, 0)) * 10**6


class TestBadMessage:
    @pytest.mark.parametrize(
        ("data", "detail"),
        [
            pytest.param("{not json", "not valid JSON", id="invalid-json"),
            pytest.param("", "not valid JSON", id="empty-text"),
            pytest.param(text([1, 2]), "must be an object", id="array"),
            pytest.param(text("readings"), "must be an object", id="string"),
            pytest.param(text({"seq": 1, "readings": [reading()]}), "no 'type'", id="missing-type"),
            pytest.param(
                text({**batch(), "type": "hello"}), "unknown message type", id="unknown-type"
            ),
            pytest.param(
                text({"type": "readings", "readings": [reading()]}), "seq", id="missing-seq"
            ),
            pytest.param(batch_text(seq=0), "seq", id="seq-0"),
            pytest.param(batch_text(seq=-4), "seq", id="seq-negative"),
            pytest.param(batch_text(seq="3"), "seq", id="seq-string"),
            pytest.param(batch_text(seq=3.0), "seq", id="seq-float"),
            pytest.param(batch_text(seq=True), "seq", id="seq-bool"),
            pytest.param(b"\xc1", "MessagePack", id="msgpack-reserved-byte"),
            pytest.param(b"\x93\x01", "MessagePack", id="msgpack-truncated"),
            pytest.param(b"", "MessagePack", id="msgpack-empty"),
            pytest.param(packed([1, 2]), "must be an object", id="msgpack-array"),
            pytest.param(packed({"type": "readings", "seq": "3"}), "seq", id="msgpack-seq-string"),
        ],
    )
    def test_frame_that_is_not_a_batch_is_bad_message(self, data: str | bytes, detail: str) -> None:
        """Each kind of non-batch frame is answered bad_message, naming the problem."""
        s = session(last_seq=2)
        message = bad_message(s.receive(data, NOW))
        assert detail in message.detail
        assert s.accepted_seq == 2

    def test_seq_beyond_64_bits_is_bad_message(self) -> None:
        """A seq no database column can hold (2**63) is not a usable seq: bad_message."""
        bad_message(session().receive(batch_text(seq=2**63), NOW))

    def test_largest_64_bit_seq_is_stored(self) -> None:
        """seq 2**63-1 is a usable seq."""
        assert isinstance(session().receive(batch_text(seq=2**63 - 1), NOW), Store)

    def test_bad_seq_wins_over_bad_readings(self) -> None:
        """With no usable seq there is no batch to reject: bad_message, not invalid_batch."""
        bad_message(session().receive(batch_text(seq="x", readings=[reading(value=-1)]), NOW))

    def test_rejection_is_answered_in_the_frame_encoding(self) -> None:
        """A bad text frame is answered as text, a bad binary frame as binary."""
        text_reject = session().receive("[]", NOW)
        binary_reject = session().receive(b"\xc1", NOW)
        assert isinstance(text_reject, Reject)
        assert isinstance(binary_reject, Reject)
        assert (text_reject.binary, binary_reject.binary) == (False, True)


class TestMessagePack:
    def test_msgpack_batch_is_stored_and_marked_binary(self) -> None:
        """A MessagePack batch is stored like its JSON twin and answered in binary."""
        s_bin, s_text = session(), session()
        from_bin = s_bin.receive(batch_bytes(4), NOW)
        from_text = s_text.receive(batch_text(4), NOW)
        assert isinstance(from_bin, Store)
        assert isinstance(from_text, Store)
        assert from_bin.binary
        assert not from_text.binary
        assert from_bin.rows == from_text.rows

    def test_msgpack_invalid_batch_locates_errors(self) -> None:
        """A MessagePack batch's problems are located as for JSON (readings, index, field)."""
        error = batch_error(
            session().receive(batch_bytes(2, [reading(), reading(value=None)]), NOW)
        )
        assert error.seq == 2
        assert [e.loc for e in error.errors] == [["readings", 1, "value"]]

    def test_msgpack_duplicate_is_binary(self) -> None:
        """A MessagePack duplicate is acked in binary."""
        assert session(last_seq=9).receive(batch_bytes(9), NOW) == Duplicate(9, True)

    def test_encode_follows_the_binary_flag(self) -> None:
        """encode gives JSON text or MessagePack bytes of the same structure."""
        assert json.loads(encode(Ack(seq=3), binary=False)) == {"type": "ack", "seq": 3}
        assert msgpack.unpackb(encode(Ack(seq=3), binary=True)) == {"type": "ack", "seq": 3}

    @pytest.mark.parametrize("binary", [False, True])
    @pytest.mark.parametrize("seq", [1, 2**63 - 1])
    def test_encode_ack_is_the_ack_model_encoded(self, seq: int, binary: bool) -> None:
        """The per-batch shortcut sends exactly the bytes of the schema's Ack."""
        assert encode_ack(seq, binary) == encode(Ack(seq=seq), binary)

    def test_a_batch_a_little_in_the_future_is_stored_and_further_is_refused(self) -> None:
        """The clock-skew check on integer microseconds: 5 min ahead is accepted, a
        microsecond more is refused with the reading located."""
        limit = "2026-11-26T13:10:00.000000Z"  # NOW + 5 min
        late = "2026-11-26T13:10:00.000001Z"
        assert isinstance(session().receive(batch_text(1, [reading(ts=limit)]), NOW), Store)
        error = batch_error(session().receive(batch_text(1, [reading(), reading(ts=late)]), NOW))
        assert [e.loc for e in error.errors] == [["readings", 1, "ts"]]


class TestAnyShape:
    """Every decoded value around the batch shape gets an answer, never an exception."""

    @pytest.mark.parametrize("encode_frame", [text, packed], ids=["json", "msgpack"])
    def test_batch_without_readings_is_invalid_batch_at_readings(self, encode_frame: Any) -> None:
        """`{"type":"readings","seq":4}` is invalid_batch for seq 4 located at ["readings"]."""
        error = batch_error(session().receive(encode_frame({"type": "readings", "seq": 4}), NOW))
        assert error.seq == 4
        assert [e.loc for e in error.errors] == [["readings"]]

    @pytest.mark.parametrize("readings", [None, 5, "x", {"ts": TS}, [1, "x", None, []]])
    @pytest.mark.parametrize("encode_frame", [text, packed], ids=["json", "msgpack"])
    def test_readings_of_any_type_are_located_errors(
        self, encode_frame: Any, readings: object
    ) -> None:
        """readings that are no list, or a list of non-objects, are invalid_batch for the seq."""
        frame_data = encode_frame({"type": "readings", "seq": 4, "readings": readings})
        error = batch_error(session().receive(frame_data, NOW))
        assert error.seq == 4
        assert all(e.loc[0] == "readings" for e in error.errors)

    def test_deeply_nested_input_is_quoted_back_briefly(self) -> None:
        """A unit nested 1000 deep (MessagePack allows 1024) is answered, quoted in short."""
        unit: Any = []
        for _ in range(1000):
            unit = [unit]
        error = batch_error(session().receive(batch_bytes(1, [reading(unit=unit)]), NOW))
        assert [e.loc for e in error.errors] == [["readings", 0, "unit"]]
        assert len(error.errors[0].msg) < 100

    @pytest.mark.parametrize("encode_frame", [text, packed], ids=["json", "msgpack"])
    def test_timestamp_before_year_1_in_utc_is_refused(self, encode_frame: Any) -> None:
        """0001-01-01T00:00:00+01:00 is in year 0 in UTC, which no datetime can show: refused
        at its ts (stored, it would break every query and vitals push that met it)."""
        outcome = session().receive(
            encode_frame(batch(1, [reading(), reading(ts="0001-01-01T00:00:00+01:00")])), NOW
        )
        assert [e.loc for e in batch_error(outcome).errors] == [["readings", 1, "ts"]]

    def test_earliest_utc_instant_is_stored(self) -> None:
        """0001-01-01T00:00:00Z is the earliest timestamp a reading may carry."""
        outcome = session().receive(batch_text(1, [reading(ts="0001-01-01T00:00:00Z")]), NOW)
        assert isinstance(outcome, Store)

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(frame=device_frames())
    def test_any_frame_gives_an_outcome_that_encodes(self, frame: Frame) -> None:
        """Any JSON or MessagePack frame around the batch shape yields an outcome, and a
        rejection's answer encodes in the frame's encoding with a documented code."""
        data = encode_fuzzed(frame)
        outcome = session().receive(data, NOW)
        assert isinstance(outcome, Store | Duplicate | Reject)
        if isinstance(outcome, Reject):
            answer = encode(outcome.message, outcome.binary)
            assert isinstance(answer, bytes) == isinstance(data, bytes)
            assert isinstance(outcome.message, BatchError | BadMessage)
            assert outcome.message.code in (
                DeviceErrorCode.INVALID_BATCH,
                DeviceErrorCode.BAD_MESSAGE,
            )
