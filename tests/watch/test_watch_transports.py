"""`vitals watch --transport sse|poll` against a real gateway: the same alerts as over
the socket, live, and acknowledgements through REST; `ws` falls back to Server-Sent
Events when the socket is refused twice while the gateway answers HTTP (a proxy that
strips Upgrade), and waits on the socket while nothing answers (a restart)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.watch.client import EXIT_OK, FALLBACK_AFTER, WatchOptions, watch
from tests.conftest import Gateway
from tests.support.alert_helpers import at, open_device
from tests.support.frames import reading

WAIT_S = 8.0


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@contextlib.asynccontextmanager
async def _explained(out: io.StringIO, err: io.StringIO) -> AsyncIterator[None]:
    """A timeout says what the watcher printed so far."""
    try:
        yield
    except TimeoutError as e:
        raise AssertionError(f"stdout: {out.getvalue()!r}\nstderr: {err.getvalue()!r}") from e


async def until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def watch_and_ack(
    gateway: Gateway, url: str, transport: str, stdin: tuple[Any, int]
) -> tuple[list[dict[str, Any]], str]:
    """Watch over `transport`: the open alert, a new one raised live, then the second
    acknowledged by typing its id; the JSON events and the notices."""
    token = await gateway.add_device("dev-1", "p-1")
    reader, writer = stdin
    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    options = WatchOptions(url=url, token=gateway.clinician_token, json=True, transport=transport)
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", 80, at(0))])  # raises systolic_bp-low
        task = asyncio.create_task(watch(options, stdout=out, stderr=err, stdin=reader, stop=stop))
        async with _explained(out, err), asyncio.timeout(WAIT_S):
            await until(lambda: len(events(out)) == 1 and "subscribed" in err.getvalue())
            await device.send([reading("spo2", 80, at(1)) for _ in range(1)])
            await device.send([reading("spo2", 80, at(s)) for s in range(2, 14)])
            await until(lambda: len(events(out)) == 2)
            second = events(out)[1]["alert"]["id"]
            os.write(writer, f"{second}\n".encode())
            await until(lambda: "acknowledged by dr-lee" in err.getvalue())
            stop.set()
            assert await task == EXIT_OK
    return events(out), err.getvalue()


@pytest.mark.parametrize("transport", ["sse", "poll"])
async def test_watch_over_sse_and_poll_sees_alerts_live_and_acknowledges(
    gateway: Gateway, stdin_pipe: tuple[Any, int], transport: str
) -> None:
    """Over either fallback transport the watcher shows the open alert, then a new one
    live, and a typed id acknowledges it through REST (the change comes back live)."""
    url = str(gateway.client.make_url("/"))
    got, notices = await watch_and_ack(gateway, url, transport, stdin_pipe)
    assert [e["alert"]["rule"] for e in got[:2]] == ["systolic_bp-low", "spo2-low"]
    assert got[-1]["alert"]["status"] == "active_ack"
    assert got[-1]["alert"]["acked_by"] == "dr-lee"
    if transport == "sse":  # the socket's own ids
        assert [e["event_id"] for e in got] == [1, 2, 3]
    assert "acknowledged by dr-lee" in notices


async def test_watch_once_over_poll_prints_the_open_alerts_and_exits(gateway: Gateway) -> None:
    """`--once --transport poll` lists the open alerts without waiting, and exits 0."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", 80, at(0))])
    out, err = io.StringIO(), io.StringIO()
    url = str(gateway.client.make_url("/"))
    options = WatchOptions(
        url=url, token=gateway.clinician_token, json=True, once=True, transport="poll"
    )
    async with asyncio.timeout(WAIT_S):
        assert await watch(options, stdout=out, stderr=err) == EXIT_OK
    assert [e["alert"]["rule"] for e in events(out)] == ["systolic_bp-low"]


async def upgrade_stripping_proxy(gateway: Gateway) -> TestServer:
    """A proxy in front of the gateway that answers socket upgrades 502 (as one that
    strips Upgrade does) and forwards everything else, streaming the answers."""
    upstream = aiohttp.ClientSession()
    base = str(gateway.client.make_url("/")).rstrip("/")

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return web.Response(status=502, text="no upgrades here")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with upstream.request(
            request.method, base + request.path_qs, headers=headers, data=await request.read()
        ) as answer:
            response = web.StreamResponse(status=answer.status)
            response.content_type = answer.content_type
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(lambda _: upstream.close())
    server = TestServer(app)
    await server.start_server()
    return server


async def test_watch_falls_back_to_sse_when_socket_upgrades_are_refused(
    gateway: Gateway, stdin_pipe: tuple[Any, int]
) -> None:
    """Behind a proxy that refuses upgrades, the default transport fails twice, says it
    is trying Server-Sent Events, and then works as over `sse`."""
    proxy = await upgrade_stripping_proxy(gateway)
    try:
        url = str(proxy.make_url("/"))
        got, notices = await watch_and_ack(gateway, url, "ws", stdin_pipe)
    finally:
        await proxy.close()
    assert "failed 2 times in a row: trying Server-Sent Events" in notices
    assert [e["event_id"] for e in got] == [1, 2, 3]


@contextlib.asynccontextmanager
async def tcp_forwarder(port: int, to: tuple[str, int]) -> AsyncIterator[None]:
    """Listens on `port` and pipes each connection to `to`, byte for byte: the gateway
    coming up on an address where nothing listened."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    open_writers: list[asyncio.StreamWriter] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*to)
        open_writers.extend([writer, up_writer])
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in open_writers:
            writer.close()
        await server.wait_closed()


async def test_watch_waits_on_the_socket_while_the_gateway_is_down(gateway: Gateway) -> None:
    """With nothing answering at the address (a gateway restarting), the default
    transport's failed sockets do not count toward SSE: after several attempts it is
    still trying the socket, and once the gateway answers it subscribes over it."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", 80, at(0))])
    with contextlib.closing(socket.socket()) as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts = 0

    def quick() -> Iterator[float]:
        nonlocal attempts
        while True:
            attempts += 1
            yield 0.05

    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    options = WatchOptions(
        url=f"http://127.0.0.1:{port}",
        token=gateway.clinician_token,
        json=True,
        backoff=lambda: quick(),
    )
    task = asyncio.create_task(watch(options, stdout=out, stderr=err, stop=stop))
    upstream = gateway.client.server
    async with _explained(out, err), asyncio.timeout(WAIT_S):
        await until(lambda: attempts >= FALLBACK_AFTER + 3)
        assert "Server-Sent Events" not in err.getvalue()
        async with tcp_forwarder(port, (str(upstream.host), int(upstream.port or 0))):
            await until(lambda: len(events(out)) == 1 and "subscribed" in err.getvalue())
            stop.set()
            assert await task == EXIT_OK
    assert "Server-Sent Events" not in err.getvalue()
    assert [e["alert"]["rule"] for e in events(out)] == ["systolic_bp-low"]
