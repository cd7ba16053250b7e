"""Wake-ups between replicas: PostgreSQL `LISTEN/NOTIFY`, and its in-process stand-in.

A notification is only ever a wake-up, never the data: whoever is woken reads what
changed from its table (the events table, the devices table, the rules), so one that
is missed costs a delay, not a loss. A listener is therefore told, besides each
payload, whenever its connection was (re)established: it must then catch up from the
table, since anything sent while it was away is gone.

- `PgNotifications`: one dedicated asyncpg connection per replica (not one from the
  engine's pool: a pooled connection is returned and reset, losing its LISTENs),
  reconnected with back-off when PostgreSQL drops it.
- `LocalNotifications`: one process (SQLite, the default): `notify` calls the
  listeners directly, so the same code runs with or without a cluster.

Senders notify inside their transaction (`notify_sql`), so the wake-up goes out when,
and only if, the change is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url

__all__ = [
    "CHANNEL_COMMANDS",
    "CHANNEL_DEVICES",
    "CHANNEL_EVENTS",
    "CHANNEL_OWNERS",
    "CHANNEL_READINGS",
    "CHANNEL_RULES",
    "CHANNEL_SETTINGS",
    "CHANNEL_VITALS",
    "LISTENER_NAME",
    "NOTIFY_MAX_BYTES",
    "LocalNotifications",
    "Notifications",
    "PgNotifications",
    "notify_sql",
]

log = logging.getLogger(__name__)

# One channel per table that wakes others up; the payload names what changed.
CHANNEL_EVENTS = "vitals_events"  # payload: the newest event id of a commit
CHANNEL_DEVICES = "vitals_devices"  # payload: "<device id> <connection epoch>"
CHANNEL_RULES = "vitals_rules"  # payload: the rules' version
CHANNEL_SETTINGS = "vitals_settings"  # payload: the patient id whose settings changed
CHANNEL_COMMANDS = "vitals_commands"  # payload: JSON, an acknowledgement handed over
CHANNEL_OWNERS = "vitals_owners"  # payload: "<replica id> <epoch> <patient id>"
# Readings of a patient stored by a replica that does not evaluate it (its other device
# streams elsewhere): data, like vitals, since the owner evaluates them as they come.
CHANNEL_READINGS = "vitals_readings"  # payload: JSON [patient, device, ward, rows]
# The one channel that carries data, not a wake-up: vitals are superseded every second,
# so one missed costs a second of staleness, and nothing reads them back from a table.
CHANNEL_VITALS = "vitals_vitals"  # payload: see services/vitals.py (`encode_relayed`)

# PostgreSQL refuses a payload of 8,000 bytes or more (in the default configuration).
NOTIFY_MAX_BYTES = 7999

# `SELECT pg_notify(...)` inside the sender's transaction: delivered on commit.
notify_sql = text("SELECT pg_notify(:channel, :payload)")

OnPayload = Callable[[str], None]
OnConnected = Callable[[], None]

# How the listening connection is named in pg_stat_activity (operators, and the tests
# that cut it off on purpose).
LISTENER_NAME = "vitals listen"

# Back-off between reconnection attempts, seconds (doubling up to the last).
_RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class Notifications(Protocol):
    @property
    def shared(self) -> bool:
        """Whether other processes hear this one's notifications (False: one process,
        so there is nobody else to tell)."""
        ...

    def listen(self, channel: str, on_payload: OnPayload, on_connected: OnConnected) -> None:
        """Call `on_payload(payload)` for each notification on `channel`, and
        `on_connected()` each time listening (re)starts: catch up from the table then.
        Call before `start`."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def notify(self, channel: str, payload: str) -> None:
        """Send outside any transaction (most senders notify in theirs: `notify_sql`)."""
        ...


class LocalNotifications:
    """One process: notifications are calls."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[OnPayload, OnConnected]]] = {}

    @property
    def shared(self) -> bool:
        return False

    def listen(self, channel: str, on_payload: OnPayload, on_connected: OnConnected) -> None:
        self._listeners.setdefault(channel, []).append((on_payload, on_connected))

    async def start(self) -> None:
        for listeners in self._listeners.values():
            for _, on_connected in listeners:
                on_connected()

    async def stop(self) -> None:
        pass

    async def notify(self, channel: str, payload: str) -> None:
        for on_payload, _ in self._listeners.get(channel, ()):
            on_payload(payload)


def asyncpg_dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL (`postgresql+asyncpg://…` → `postgresql://…`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgNotifications:
    """LISTEN on one connection of its own, kept open for the replica's lifetime."""

    def __init__(self, url: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._listeners: dict[str, list[tuple[OnPayload, OnConnected]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # asyncpg.Connection while connected
        self._connected = asyncio.Event()
        # `notify` outside a transaction goes through one connection of its own, kept
        # open (vitals go out every second: a connection each time was ~5 ms and a
        # backend started and ended per call), one statement at a time.
        self._sender: Any = None  # asyncpg.Connection once opened
        self._sending = asyncio.Lock()
        self._stopped = False  # after `stop`, `notify` drops what it is given

    @property
    def shared(self) -> bool:
        return True

    def listen(self, channel: str, on_payload: OnPayload, on_connected: OnConnected) -> None:
        self._listeners.setdefault(channel, []).append((on_payload, on_connected))

    async def start(self) -> None:
        """Connect and listen; returns once listening (or after 5 s of trying, leaving
        the reconnect loop to go on: the followers' own timers poll meanwhile)."""
        self._task = asyncio.create_task(self._run(), name="pg-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._sending:
            self._stopped = True
            if self._sender is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._sender.close(), 1.0)
                self._sender = None

    async def notify(self, channel: str, payload: str) -> None:
        """Raises OSError or asyncpg's errors when PostgreSQL cannot be reached; the
        next call connects afresh. After `stop` (shutting down) it sends nothing, so no
        connection outlives the replica's resources."""
        import asyncpg

        async with self._sending:
            if self._stopped:
                return
            if self._sender is None or self._sender.is_closed():
                self._sender = await asyncpg.connect(self._dsn)
            try:
                await self._sender.execute("SELECT pg_notify($1, $2)", channel, payload)
            except BaseException:
                conn, self._sender = self._sender, None
                with contextlib.suppress(Exception):
                    conn.terminate()
                raise

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for on_payload, _ in self._listeners.get(channel, ()):
            try:
                on_payload(payload)
            except Exception:
                log.exception("listener of %s failed", channel)

    async def _run(self) -> None:
        import asyncpg

        attempt = 0
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": LISTENER_NAME}
                )
            except (OSError, asyncpg.PostgresError) as e:
                delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                if attempt == 0:
                    log.warning("cannot listen for other replicas' changes: %s", e)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self._listeners:
                    await conn.add_listener(channel, self._dispatch)
                if attempt:
                    log.info("listening for other replicas' changes again")
                attempt = 0
                self._conn = conn
                self._connected.set()
                for listeners in self._listeners.values():
                    for _, on_connected in listeners:
                        on_connected()
                # A connection can die silently (a frozen peer, a dropped route): ask
                # it something now and then; a failure counts as lost.
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 2.0)
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 2.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("lost the connection listening for other replicas: %s", e)
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 1.0)
            attempt += 1
            await asyncio.sleep(_RETRY_S[0])
