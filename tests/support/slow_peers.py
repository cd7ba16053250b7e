"""Clients that stop reading, for tests of what the gateway does with a slow peer."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.connector import Connection

from tests.conftest import Gateway

__all__ = ["stall", "tiny_receive_buffer"]


def tiny_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a 2 KiB receive buffer (an `aiohttp.TCPConnector`'s
    `socket_factory`)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    return sock


def stall(gateway: Gateway, conn: Connection | None) -> None:
    """The client stops reading on `conn`, and the gateway's side of that one
    connection gets small send buffers, so it backs up after a few dozen messages
    instead of megabytes (the kernel and asyncio would otherwise buffer several MiB)."""
    assert conn is not None
    assert conn.transport is not None
    conn.transport.pause_reading()  # the client stops reading: nothing leaves the kernel
    local = conn.transport.get_extra_info("sockname")
    runner = gateway.client.server.runner
    assert runner is not None
    server = runner.server
    assert server is not None
    for handler in server.connections:
        transport = handler.transport
        if transport is not None and transport.get_extra_info("peername") == local:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=4096)
            return
    raise AssertionError("server side of the stalled client not found")
