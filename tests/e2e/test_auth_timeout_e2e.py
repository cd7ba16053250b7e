"""Half-open connections: a client that never completes its upgrade request (no
credentials within auth_timeout_s) is disconnected, while devices stream on."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.processes import GatewayProcess, vitals

pytestmark = pytest.mark.e2e


def test_client_without_a_complete_request_is_dropped_after_auth_timeout(
    gateway_process: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auth_timeout_s = 1, a connection that sent half an upgrade request and one
    that sent nothing are both closed by the gateway within a couple of seconds, and a
    device connecting meanwhile is served normally."""
    monkeypatch.setenv("VITALS_AUTH_TIMEOUT_S", "1")
    gw = gateway_process
    admin = gw.provision_user("root", "admin")
    gw.start()

    silent = socket.create_connection(("127.0.0.1", gw.port))
    partial = socket.create_connection(("127.0.0.1", gw.port))
    partial.sendall(b"GET /v1/devices/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    try:
        started = time.monotonic()
        sim = vitals(
            "simulate",
            "--url",
            gw.url,
            "--admin-token",
            admin,
            "--devices",
            "1",
            "--rate",
            "4",
            "--duration",
            "3",
        )
        assert sim.returncode == 0
        for sock in (silent, partial):
            sock.settimeout(5)
            assert sock.recv(1024) == b"", "the gateway kept a half-open connection"
        assert time.monotonic() - started < 10
    finally:
        silent.close()
        partial.close()
    status = json.loads(
        vitals("devices", "list", "--json", "--database-url", gw.database_url).stdout
    )
    assert status["last_seq"] > 0, "the device was not served meanwhile"
