"""Database trouble while a device streams: the gateway stays up, acks nothing it did
not store, says it is not ready, logs the cause once, and recovers by itself.

The trouble is real: the database lives on a small tmpfs that the test fills up, so
SQLite's own writes fail with "database or disk is full" (permissions would not do:
the suite may run as root, which ignores them).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import WSMsgType
from sqlalchemy.engine import make_url

from gateway.http.keys import SETTINGS
from gateway.settings import Settings, load_settings
from tests.support.alert_helpers import open_dashboard, threshold_rules, with_overrides
from tests.support.frames import batch, batch_text, recent

if TYPE_CHECKING:
    # For annotations only: pytest loads tests/conftest.py as the module `conftest`.
    from tests.conftest import Gateway

STREAM = "/v1/devices/stream"
READINGS_PER_BATCH = 50
PRODUCE_EVERY_S = 0.04
CLOSE_STORAGE = 1011


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shipped threshold rules only: these tests count the alarms a low blood
    pressure raises, which a NEWS2 rule would score too."""
    path = tmp_path / "alert-rules.toml"
    path.write_text(threshold_rules(), encoding="utf-8")
    return with_overrides(settings, rules_file=str(path))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for this test (skipped where mounting is not allowed):
    room for the WAL's 4 MiB between checkpoints, quick to fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # Lazy: the gateway's pooled connections may still hold the files open.
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@contextlib.contextmanager
def disk_full(directory: Path) -> Iterator[None]:
    """Fill the file system holding `directory` to the last byte; free it on exit."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    try:
        yield
    finally:
        filler.unlink()


@dataclass
class ResendingDevice:
    """A device as the protocol expects it: produces a batch every PRODUCE_EVERY_S
    until told to stop, pipelines them, and after any drop reconnects and resends from
    welcome.last_seq."""

    gateway: Gateway
    token: str
    producing: bool = True
    produced: int = 0
    acked: set[int] = field(default_factory=set)  # seqs acked by the gateway
    confirmed_through: int = 0  # every seq up to it acked or covered by a welcome
    close_codes: list[int | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # error replies
    new_batch: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # confirmed_through grew

    async def confirmed(self, seq: int) -> None:
        """Wait until every batch up to `seq` is known stored."""
        while self.confirmed_through < seq:
            self.progress.clear()
            await self.progress.wait()

    def _confirm(self, seq: int) -> None:
        if seq > self.confirmed_through:
            self.confirmed_through = seq
            self.progress.set()

    async def produce(self) -> None:
        while True:
            await asyncio.sleep(PRODUCE_EVERY_S)
            # Checked after the sleep: told to stop while asleep, it must not add a batch
            # after the test has read `produced` to wait for the last one.
            if not self.producing:
                return
            self.produced += 1
            self.new_batch.set()

    async def stream(self) -> None:
        while True:
            with contextlib.suppress(ConnectionError, OSError):
                await self._connection()
            await asyncio.sleep(0.1)

    async def _connection(self) -> None:
        ws = await self.gateway.client.ws_connect(STREAM, headers=self.gateway.auth(self.token))
        async with ws:
            welcome = json.loads(await ws.receive_str(timeout=5))
            self._confirm(welcome["last_seq"])
            sent_through = welcome["last_seq"]

            async def write() -> None:
                nonlocal sent_through
                while True:
                    self.new_batch.clear()
                    while sent_through < self.produced:
                        sent_through += 1
                        await ws.send_str(
                            batch_text(sent_through, recent(READINGS_PER_BATCH, ago_s=2))
                        )
                    await self.new_batch.wait()

            writer = asyncio.create_task(write())
            try:
                while (msg := await ws.receive()).type is WSMsgType.TEXT:
                    reply = json.loads(msg.data)
                    if reply["type"] == "ack":
                        self.acked.add(reply["seq"])
                        self._confirm(reply["seq"])
                    else:
                        self.errors.append(reply)
                self.close_codes.append(msg.data if msg.type is WSMsgType.CLOSE else None)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await writer


def db_file(gateway: Gateway) -> Path:
    database = make_url(gateway.app[SETTINGS].database_url).database
    assert database is not None
    return Path(database)


def _stored_per_seq(db: Path, device_id: str) -> dict[int, int]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT seq, count(*) FROM readings WHERE device_id = ? GROUP BY seq", (device_id,)
        ).fetchall()
    return dict(rows)


async def _status(gateway: Gateway, path: str) -> int:
    async with asyncio.timeout(5):
        response = await gateway.client.get(path)
        await response.read()
        return response.status


class TestDiskFull:
    @pytest.fixture
    def settings(self, small_disk: Path) -> Settings:
        """The shipped defaults, with the database on the small disk."""
        return load_settings(
            database_url=f"sqlite+aiosqlite:///{small_disk / 'vitals.db'}",
            commit_delay_ms=1.0,
        )

    async def test_disk_full_acks_nothing_unstored_reports_not_ready_and_recovers(
        self, gateway: Gateway, small_disk: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The disk fills up mid-stream, twice: each time the gateway stays up (healthz
        200), /readyz turns 503, nothing unstored is acked and the cause is logged once;
        freed, it is ready again by itself, and the device, resending from
        welcome.last_seq, ends with every batch stored exactly once."""
        caplog.set_level(logging.INFO, logger="gateway")
        token = await gateway.add_device("watch-001", "p-001")
        db = small_disk / "vitals.db"
        device = ResendingDevice(gateway, token)
        tasks = [asyncio.create_task(device.produce()), asyncio.create_task(device.stream())]
        incidents = []
        try:
            async with asyncio.timeout(30):
                for _ in range(2):
                    await device.confirmed(device.confirmed_through + 5)
                    ready_before = await _status(gateway, "/readyz")
                    incidents.append((ready_before, *await self._incident(gateway, db, device)))
                await device.confirmed(device.confirmed_through + 5)
                device.producing = False
                await device.confirmed(device.produced)
            ready_after = await _status(gateway, "/readyz")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        for ready_before, ready_during, healthy, acked, stored in incidents:
            assert ready_before == 200
            assert ready_during == [503, 503]
            assert healthy == 200
            assert acked <= stored.keys(), "acked while the disk was full, yet not stored"
        assert ready_after == 200
        assert device.close_codes.count(CLOSE_STORAGE) >= 2, "the trouble never hit the device"
        # Every batch stored exactly once, whole, after the device resent what was refused.
        assert _stored_per_seq(db, "watch-001") == dict.fromkeys(
            range(1, device.produced + 1), READINGS_PER_BATCH
        )
        failed = [
            r.getMessage() for r in caplog.records if "database write failed" in r.getMessage()
        ]
        recovered = [r for r in caplog.records if "database writes succeed again" in r.getMessage()]
        assert len(failed) == 2, failed
        assert len(recovered) == 2
        assert all("database or disk is full" in message for message in failed)

    @staticmethod
    async def _incident(
        gateway: Gateway, db: Path, device: ResendingDevice
    ) -> tuple[list[int], int, set[int], dict[int, int]]:
        """One second of a full disk: readiness twice, liveness, what was acked meanwhile
        and what was stored at its end."""
        with disk_full(db.parent):
            acked_before = set(device.acked)
            await asyncio.sleep(0.5)
            ready = [await _status(gateway, "/readyz")]
            await asyncio.sleep(0.5)
            ready.append(await _status(gateway, "/readyz"))
            healthy = await _status(gateway, "/healthz")
            stored = _stored_per_seq(db, "watch-001")
            return ready, healthy, device.acked - acked_before, stored


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction (a backup, a CLI command): holds SQLite's
    write lock until the block ends."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


class TestLockedDatabase:
    async def test_lock_shorter_than_busy_timeout_only_delays_acks(self, gateway: Gateway) -> None:
        """A write lock held for 1 s: batches sent meanwhile are acked only once the lock
        is gone, and all are stored once."""
        token = await gateway.add_device("watch-001", "p-001")
        db = db_file(gateway)
        ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
        await ws.receive_str(timeout=5)
        loop = asyncio.get_running_loop()

        async def acks() -> list[tuple[float, dict[str, Any]]]:
            received = []
            for _ in range(5):
                ack = json.loads(await ws.receive_str())
                received.append((loop.time(), ack))
            return received

        with write_lock(db):
            reader = asyncio.create_task(acks())
            for seq in range(1, 6):
                await ws.send_json(batch(seq, recent()))
            await asyncio.sleep(1.0)
            released_at = loop.time()
        async with asyncio.timeout(5):
            received = await reader
        await ws.close()
        assert [ack for _, ack in received] == [{"type": "ack", "seq": s} for s in range(1, 6)]
        assert min(at for at, _ in received) >= released_at
        assert _stored_per_seq(db, "watch-001") == dict.fromkeys(range(1, 6), 1)

    @pytest.mark.parametrize("settings_overrides", [{"sqlite_busy_timeout_s": 1.0}])
    async def test_batch_refused_by_a_failed_commit_is_not_skipped_by_a_later_one(
        self, gateway: Gateway
    ) -> None:
        """Seq 4's commit times out on a lock, seq 5 (pipelined behind it) commits after
        the lock is gone: the device must still be welcomed at last_seq 3, so that its
        resend of 4 and 5 stores both."""
        token = await gateway.add_device("watch-001", "p-001")
        db = db_file(gateway)
        ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
        await ws.receive_str(timeout=5)
        for seq in (1, 2, 3):
            await ws.send_json(batch(seq, recent()))
            assert json.loads(await ws.receive_str(timeout=5)) == {"type": "ack", "seq": seq}

        with write_lock(db):
            await ws.send_json(batch(4, recent()))  # its commit waits 1 s for the lock, fails
            await asyncio.sleep(0.3)
            await ws.send_json(batch(5, recent()))  # queued behind it; its commit waits too
            error = json.loads(await ws.receive_str(timeout=5))
            await asyncio.sleep(0.3)
        # The lock is gone while seq 5's commit still waits for it.
        closed = await ws.receive(timeout=5)
        assert error["code"] == "internal"
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, CLOSE_STORAGE)

        await asyncio.sleep(0.5)  # seq 5's commit has finished one way or the other
        ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
        welcome = json.loads(await ws.receive_str(timeout=5))
        for seq in range(welcome["last_seq"] + 1, 6):
            await ws.send_json(batch(seq, recent()))
            assert json.loads(await ws.receive_str(timeout=5)) == {"type": "ack", "seq": seq}
        await ws.close()
        assert _stored_per_seq(db, "watch-001") == dict.fromkeys(range(1, 6), 1)
        assert welcome["last_seq"] == 3

    @pytest.mark.parametrize("settings_overrides", [{"sqlite_busy_timeout_s": 0.5}])
    async def test_an_alarm_whose_commit_failed_is_stored_and_pushed_once_after_the_lock(
        self, gateway: Gateway
    ) -> None:
        """A batch that raises an alarm fails to commit on a lock: the dashboard is shown
        nothing unstored, then gets the alarm once writes work again (within a tick),
        and the device's resend of that batch stores it without raising it twice."""
        token = await gateway.add_device("watch-001", "p-001")
        db = db_file(gateway)
        low_bp = batch(1, recent(metric="systolic_bp", value=80))  # raises at once
        async with open_dashboard(gateway) as dash:
            await dash.subscribe()
            ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
            await ws.receive_str(timeout=5)
            with write_lock(db):
                await ws.send_json(low_bp)
                error = json.loads(await ws.receive_str(timeout=5))
                closed = await ws.receive(timeout=5)
                await dash.assert_silent(0.2)
            assert error["code"] == "internal"
            assert (closed.type, closed.data) == (WSMsgType.CLOSE, CLOSE_STORAGE)

            raised = await dash.alert()
            assert (raised.event_id, raised.alert["status"]) == (1, "active_unack")

            ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
            welcome = json.loads(await ws.receive_str(timeout=5))
            assert welcome["last_seq"] == 0
            await ws.send_json(low_bp)
            assert json.loads(await ws.receive_str(timeout=5)) == {"type": "ack", "seq": 1}
            await ws.close()
            await dash.assert_silent(0.3)
        assert _stored_per_seq(db, "watch-001") == {1: 1}
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT event_id, kind FROM alert_events").fetchall() == [
                (1, "raised")
            ]
