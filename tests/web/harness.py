"""What the browser tests need besides the browser: clinicians and devices provisioned
through the CLI, the rules they run with, readings sent as a device, and a calm history.
The `serve` process is `tests.support.processes.GatewayProcess`, the simulator a
`gateway.client.process.ChildProcess`; each is ended by its fixture or test in `finally`.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client.process import vitals_command
from gateway.core.rules import load_rules
from gateway.settings import shipped_config_dir
from tests.support.frames import batch_text
from tests.support.processes import GatewayProcess, add_device, add_user

__all__ = [
    "ADMIN",
    "CLINICIANS",
    "DEVICES",
    "Device",
    "Provisioned",
    "User",
    "calm_history",
    "provision",
    "quick_rules",
    "send_readings",
    "ts_text",
]


# An administrator, who provisions more devices over REST in the 40-patient test.
ADMIN = "root"
# (clinician, wards they may see): dr-ben sees one ward of the two.
CLINICIANS = (("dr-ana", ("icu", "ward-4b")), ("dr-ben", ("icu",)))
# (device, patient, ward): two wards, so the ward filter has something to filter. Few,
# because each `vitals devices add` pays a whole interpreter start-up.
DEVICES = (
    ("watch-101", "bed-101", "icu"),
    ("watch-102", "bed-102", "icu"),
    ("watch-103", "bed-103", "icu"),
    ("watch-201", "bed-201", "ward-4b"),
)


@dataclass(frozen=True)
class User:
    name: str
    token: str


@dataclass(frozen=True)
class Device:
    id: str
    patient_id: str
    ward: str
    token: str

    def as_json(self) -> str:
        return json.dumps(
            {"id": self.id, "patient_id": self.patient_id, "ward": self.ward, "token": self.token}
        )


@dataclass(frozen=True)
class Provisioned:
    """A database file with users and devices made by the CLI, copied for each test."""

    template: Path
    users: dict[str, User]
    devices: dict[str, Device]


def quick_rules(directory: Path) -> Path:
    """The shipped rules with `for_s` cut to at most 2 s, so that a simulated
    deterioration raises its alert within seconds; limits, labels and priorities unchanged."""
    lines = []
    for rule in load_rules(shipped_config_dir() / "alert-rules.toml"):
        lines += [
            "[[rule]]",
            f'name = "{rule.name}"',
            f'label = "{rule.shown_as}"',
            f'metric = "{rule.metric.value}"',
            f"{rule.direction} = {rule.threshold!r}",
            f"for_s = {min(rule.for_s, 2.0)!r}",
            f"clear_margin = {rule.clear_margin!r}",
            f'priority = "{rule.priority.value}"',
            "",
        ]
    path = directory / "alert-rules.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def provision(
    database_url: str,
    users: Sequence[tuple[str, Sequence[str]]],
    devices: Sequence[tuple[str, str, str]],
) -> tuple[dict[str, User], dict[str, Device]]:
    """Clinicians, the administrator `ADMIN`, and devices, created by `vitals users add` /
    `vitals devices add --json`."""
    commands = (
        [vitals_command(*add_user(database_url, name, "clinician", wards)) for name, wards in users]
        + [vitals_command(*add_user(database_url, ADMIN, "admin"))]
        + [
            vitals_command(*add_device(database_url, dev, patient, ward))
            for dev, patient, ward in devices
        ]
    )
    # The first command creates the schema alone, so the others never race to it; they
    # then run side by side, SQLite making each wait out the others' write lock.
    outputs = [_run(commands[0])]
    running = [_spawn(c) for c in commands[1:]]
    outputs += [_finish(p) for p in running]
    made_users: dict[str, User] = {}
    made_devices: dict[str, Device] = {}
    for out in outputs:
        data = json.loads(out)
        if "role" in data:
            made_users[data["name"]] = User(data["name"], data["token"])
        else:
            made_devices[data["id"]] = Device(
                data["id"], data["patient_id"], data["ward"], data["token"]
            )
    return made_users, made_devices


def _spawn(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args!r} failed: {err}")
    return out


def _run(command: list[str]) -> str:
    return _finish(_spawn(command))


def ts_text(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def send_readings(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    device: Device,
    readings: list[dict[str, Any]],
) -> None:
    """Send readings as the device, in batches of 500, each awaited until acked (stored)."""
    headers = {"Authorization": f"Bearer {device.token}"}
    async with http.ws_connect(f"{gateway.ws_url}/v1/devices/stream", headers=headers) as ws:
        welcome = await ws.receive_json(timeout=5)
        assert welcome["type"] == "welcome", welcome
        seq = int(welcome["last_seq"])
        for start in range(0, len(readings), 500):
            seq += 1
            await ws.send_str(batch_text(seq, readings[start : start + 500]))
            reply = await ws.receive_json(timeout=5)
            assert reply == {"type": "ack", "seq": seq}, reply


def calm_history(
    now: datetime, minutes: int = 15, every_s: int = 20, phase: float = 0.0
) -> list[dict[str, Any]]:
    """Unremarkable vitals for the last `minutes`: sparklines and charts with a past."""
    out: list[dict[str, Any]] = []
    steps = minutes * 60 // every_s
    for i in range(steps, 0, -1):
        ts = ts_text(now - timedelta(seconds=i * every_s))
        wave = math.sin(i / 6 + phase)
        for metric, value in (
            ("heart_rate", 76 + 6 * wave),
            ("spo2", 97 + 1.2 * math.sin(i / 4 + phase)),
            ("resp_rate", 15 + 2 * math.cos(i / 5 + phase)),
            ("systolic_bp", 122 + 6 * wave),
            ("diastolic_bp", 78 + 4 * wave),
            ("temperature", 36.8 + 0.2 * math.sin(i / 9 + phase)),
        ):
            out.append({"ts": ts, "metric": metric, "value": round(value, 1)})
    return out
