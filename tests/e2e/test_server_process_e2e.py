"""The process harness every real-gateway test, the demo and the benchmark start
servers with: a server that dies at start is reported with its own words."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.client.process import ServerFailed, vitals_serve

pytestmark = pytest.mark.e2e


def test_a_gateway_that_exits_at_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    """`start()` on a taken port raises at once (not after the timeout), naming the exit
    code and quoting the gateway's own line from its log; nothing is left running."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = vitals_serve(
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}",
            port=holder.getsockname()[1],
            log_dir=tmp_path,
        )
        with pytest.raises(ServerFailed) as failed:
            server.start(timeout=60)

    assert "the gateway exited with code 1" in str(failed.value)
    assert "address already in use" in str(failed.value)
    assert not server.running
