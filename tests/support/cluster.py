"""What the cluster tests share: a fresh database behind HAProxy's check, the simulator
with its acked log, what the database stored, and a dashboard that resumes by event id
across replicas (as a browser would through HAProxy)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.client.cluster import HAPROXY
from tests.support.processes import VITALS, add_user, vitals

SEED = 20261205
# A client address HAProxy is not: the replicas trust 127.0.0.1 (HAProxy) only.
CLIENT_ADDRESS = "127.0.0.2"
# No device-offline alarm within a test: a device that moves to another replica would
# leave one behind on the first, which is the alert-ownership work's to fix, not this.
REPLICA_ENV = {"VITALS_OFFLINE_AFTER_S": "600"}


def require_haproxy() -> None:
    if shutil.which(HAPROXY) is None:
        reason = "haproxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the cluster tests must run)", pytrace=False)
        pytest.skip(reason)


def user(database_url: str, name: str, role: str) -> str:
    out = vitals(*add_user(database_url, name, role, ("icu",) if role == "clinician" else ()))
    token: str = json.loads(out.stdout)["token"]
    return token


@dataclass(frozen=True)
class Acked:
    device_id: str
    seq: int
    n: int


def acked_batches(acked_log: Path) -> list[Acked]:
    """The batches the simulator's devices saw acked (its --acked-log)."""
    if not acked_log.exists():
        return []
    lines = [line for line in acked_log.read_text().splitlines() if line.endswith("}")]
    return [Acked(r["device_id"], r["seq"], r["n"]) for r in map(json.loads, lines)]


async def stored_batches(database_url: str) -> dict[tuple[str, int], int]:
    """(device_id, seq) -> readings stored, straight from the database."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT device_id, seq, count(*) FROM readings GROUP BY device_id, seq")
            )
            return {(d, s): n for d, s, n in rows}
    finally:
        await engine.dispose()


async def simulate(
    url: str,
    admin: str,
    acked_log: Path,
    log: Path,
    *,
    devices: int,
    duration: float,
    scenario: Path | None = None,
) -> asyncio.subprocess.Process:
    """The simulator through `url`, its acked batches logged to `acked_log`."""
    chosen = () if scenario is None else ("--scenario", str(scenario))
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *VITALS,
            *("simulate", "--url", url, "--admin-token", admin, "--seed", str(SEED)),
            *("--devices", str(devices), "--rate", "5", "--msgpack", "--drain", "5"),
            *("--duration", str(duration), "--acked-log", str(acked_log), *chosen),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until_acked(acked_log: Path, devices: int, more_than: Counter[str], n: int) -> None:
    """Until each of `devices` devices has `n` more acked batches than `more_than` (30 s)."""
    now: Counter[str] = Counter()
    for _ in range(300):
        now = Counter(a.device_id for a in acked_batches(acked_log))
        if len(now) == devices and all(now[d] >= more_than[d] + n for d in now):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"devices not streaming through HAProxy: {now}")


def assert_every_acked_batch_stored(
    acked: list[Acked], stored: dict[tuple[str, int], int], *, exactly_once: bool
) -> None:
    assert acked
    missing = [a for a in acked if (a.device_id, a.seq) not in stored]
    assert not missing, f"{len(missing)} acked batches not stored: {missing[:5]}"
    if exactly_once:
        doubled = [a for a in acked if stored[(a.device_id, a.seq)] != a.n]
        assert not doubled, f"acked batches not stored exactly once: {doubled[:5]}"


@dataclass
class Dashboard:
    """A clinician's dashboard through HAProxy that reconnects after every drop,
    resuming from the last event id it saw; counts its subscriptions and keeps every
    event id it received, in order."""

    url: str
    token: str
    subscriptions: int = 0
    last_event_id: int = 0
    received: list[int] = field(default_factory=list)

    async def run(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.ws_connect(self.url, headers=headers) as ws:
                    since = self.last_event_id
                    await ws.send_json(
                        {"type": "subscribe", "since_event_id": since, "vitals": False}
                    )
                    async for msg in ws:
                        if msg.type is WSMsgType.TEXT:
                            message = json.loads(msg.data)
                            if message["type"] == "subscribed":
                                self.subscriptions += 1
                            elif message["type"] == "alert":
                                self.last_event_id = message["event_id"]
                                self.received.append(message["event_id"])
            await asyncio.sleep(0.1)
