"""`vitals serve` and `vitals demo` as a user starts them: a taken port, and the demo's
data seen by the other commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import GatewayProcess, free_port

pytestmark = pytest.mark.e2e

TIMEOUT_S = 60


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def vitals(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=cwd,
    )  # fmt: skip


def test_serve_on_a_taken_port_says_so_in_one_line(taken_port: int, tmp_path: Path) -> None:
    """`vitals serve` on a port in use prints one line naming address and reason (no
    traceback) and exits 1, before it opens the database."""
    db = tmp_path / "vitals.db"
    run = vitals("serve", "--port", str(taken_port), "--database-url",
                 f"sqlite+aiosqlite:///{db}", cwd=tmp_path)  # fmt: skip

    assert run.returncode == 1
    assert run.stderr == (
        f"vitals serve: cannot listen on 127.0.0.1:{taken_port}: address already in use\n"
    )
    assert not db.exists()


def test_demo_on_a_taken_port_says_so_and_keeps_the_last_demo(
    taken_port: int, tmp_path: Path
) -> None:
    """`vitals demo --port P` with P taken prints the same one line, exits 1, and leaves
    the previous demo's database alone."""
    db = tmp_path / "demo.db"
    db.write_bytes(b"the last demo")

    run = vitals("demo", "--port", str(taken_port), "--database", str(db), cwd=tmp_path)

    assert run.returncode == 1
    assert run.stderr == (
        f"vitals demo: cannot listen on 127.0.0.1:{taken_port}: address already in use\n"
    )
    assert db.read_bytes() == b"the last demo"


def test_demo_data_is_seen_through_the_config_it_prints(tmp_path: Path) -> None:
    """The demo, on the port it is given, writes a settings file beside its database and
    prints `devices list --config FILE`; that command lists the demo's devices."""
    port = free_port()
    db = tmp_path / "var" / "demo.db"
    demo = vitals("demo", "--port", str(port), "--database", str(db), "--devices", "2",
                  "--duration", "2", cwd=tmp_path)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    config = tmp_path / "var" / "demo.toml"
    assert f"http://127.0.0.1:{port}" in demo.stdout
    assert f"devices list --config {config}" in demo.stdout

    listed = vitals("devices", "list", "--json", "--config", str(config), cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    devices = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(d["patient_id"] for d in devices) == ["p-001", "p-002"]


def test_simulate_ends_quietly_when_its_reader_leaves(gateway_process: GatewayProcess) -> None:
    """`vitals simulate | head -1` (no --duration): the simulator stops at its first
    progress line after the reader left, with status 0 and no traceback, instead of
    streaming on for ever."""
    admin = gateway_process.provision_user("root", "admin")
    gateway_process.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "--url", gateway_process.url,
         f"--admin-token={admin}", "--devices", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        try:
            code = proc.wait(timeout=TIMEOUT_S)  # stderr is a few lines at most
        except subprocess.TimeoutExpired:
            proc.kill()  # the defect: it would run on for ever
            raise
        err = proc.stderr.read().decode()

    assert b"devices 1/1 connected" in first
    assert (code, "Traceback" in err) == (0, False)
