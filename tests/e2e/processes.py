"""Real `vitals` processes for end-to-end tests: provisioning, a gateway that can be
killed and restarted on the same port and database, and client commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GatewayProcess", "free_port", "vitals"]

VITALS = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def vitals(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `vitals` command to completion."""
    return subprocess.run(
        [*VITALS, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@dataclass
class GatewayProcess:
    """`vitals serve` on a fixed port and database file, startable again after a kill."""

    db: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    def provision_user(self, name: str, role: str, wards: tuple[str, ...] = ("icu",)) -> str:
        ward_args = (
            [arg for ward in wards for arg in ("--ward", ward)] if role == "clinician" else []
        )
        out = vitals(
            "users",
            "add",
            name,
            "--role",
            role,
            *ward_args,
            "--json",
            "--database-url",
            self.database_url,
        )
        token: str = json.loads(out.stdout)["token"]
        return token

    def provision_device(self, device_id: str, patient: str, ward: str = "icu") -> dict[str, Any]:
        out = vitals(
            "devices",
            "add",
            device_id,
            "--patient",
            patient,
            "--ward",
            ward,
            "--json",
            "--database-url",
            self.database_url,
        )
        record: dict[str, Any] = json.loads(out.stdout)
        return record

    def start(self, timeout: float = 20) -> None:
        self.starts += 1
        with (self.log_dir / f"gateway-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *VITALS,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--database-url",
                    self.database_url,
                    *self.extra,
                ],
                stdout=log,  # the child keeps its own copy of the descriptor
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready within {timeout} s: {self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("gateway-*.log"))
        )

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
