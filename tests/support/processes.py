"""Real `vitals` processes for the end-to-end and browser tests: one-shot commands, and
a `vitals serve` on a fixed port and database file that can be stopped, killed and
started again (through the product's harness, `gateway.client.process`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.client.process import ServerProcess, free_port, vitals_command, vitals_serve

__all__ = [
    "VITALS",
    "GatewayProcess",
    "add_device",
    "add_user",
    "free_port",
    "read_json_lines",
    "vitals",
    "wait_for_dashboards",
]

VITALS = vitals_command()


def vitals(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `vitals` command to completion."""
    return subprocess.run(
        [*VITALS, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def add_user(database_url: str, name: str, role: str, wards: Sequence[str] = ()) -> list[str]:
    """The arguments of `vitals users add ... --json` on `database_url`."""
    ward_args = [arg for ward in wards for arg in ("--ward", ward)]
    return [
        "users", "add", name, "--role", role, *ward_args,
        "--json", "--database-url", database_url,
    ]  # fmt: skip


def add_device(database_url: str, device_id: str, patient: str, ward: str) -> list[str]:
    """The arguments of `vitals devices add ... --json` on `database_url`."""
    return [
        "devices", "add", device_id, "--patient", patient, "--ward", ward,
        "--json", "--database-url", database_url,
    ]  # fmt: skip


@dataclass
class GatewayProcess:
    """`vitals serve` on a fixed port and database file, startable again after a stop or
    a kill; `extra` options are read at each start. Its output goes to
    `log_dir/gateway.log`, every start appending."""

    db: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    server: ServerProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The running (or last) child, for signals and waits of a test's own."""
        return None if self.server is None else self.server.proc

    def provision_user(self, name: str, role: str, wards: tuple[str, ...] = ("icu",)) -> str:
        out = vitals(*add_user(self.database_url, name, role, wards if role == "clinician" else ()))
        token: str = json.loads(out.stdout)["token"]
        return token

    def provision_device(self, device_id: str, patient: str, ward: str = "icu") -> dict[str, Any]:
        out = vitals(*add_device(self.database_url, device_id, patient, ward))
        record: dict[str, Any] = json.loads(out.stdout)
        return record

    def start(self) -> None:
        """Start and wait for `/healthz`; ServerFailed (with the log's tail) if not."""
        self.server = vitals_serve(
            "--database-url",
            self.database_url,
            *self.extra,
            port=self.port,
            log_dir=self.log_dir,
        )
        self.server.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.server is not None
        self.server.kill()

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after the harness's grace): the graceful path."""
        return None if self.server is None else self.server.stop()

    def log_text(self) -> str:
        return "" if self.server is None else self.server.log_text()

    def close(self) -> None:
        """Whatever still runs is killed: the end of a test that already checked its stop."""
        if self.server is not None and self.server.running:
            self.server.kill()


def read_json_lines(proc: subprocess.Popen[str], into: list[tuple[float, dict[str, Any]]]) -> None:
    """Each line `proc` prints (`vitals watch --json`), parsed, with when it came; run in
    a thread until the process's output ends."""
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append((time.time(), json.loads(line)))


def wait_for_dashboards(url: str, count: int, timeout: float) -> None:
    """Until the gateway's /metrics counts `count` open dashboard streams."""
    deadline = time.monotonic() + timeout
    expected = f"vitals_dashboard_connections {float(count)}"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            if expected in response.read().decode():
                return
        time.sleep(0.1)
    raise AssertionError(f"no {count} dashboard stream(s) within {timeout} s")
