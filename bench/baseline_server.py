"""Baseline (a): a bare aiohttp WebSocket server speaking just enough of the device
protocol to be driven by the same load generator.

It sends a `welcome` first, like the gateway, then answers every text frame with
`{"type":"ack","seq":N}`, reading N with `json.loads`: no validation, no storage, no
alerts. What the gateway achieves against this is the price of everything it does
beyond aiohttp itself.

`python -m bench.baseline_server --port N` (uvloop when installed, like the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from aiohttp import WSMsgType, web

__all__ = ["create_app", "main"]

_WELCOME = json.dumps(
    {
        "type": "welcome",
        "device_id": "baseline",
        "patient_id": "baseline",
        "last_seq": 0,
        "max_batch": 500,
    },
    separators=(",", ":"),
)


async def _stream(request: web.Request) -> web.WebSocketResponse:
    # The gateway's WebSocket settings, so only the work per frame differs.
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=262_144)
    await ws.prepare(request)
    await ws.send_str(_WELCOME)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            seq = json.loads(msg.data)["seq"]
            await ws.send_str(f'{{"type":"ack","seq":{seq}}}')
        elif msg.type is WSMsgType.ERROR:
            break
    return ws


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/devices/stream", _stream)
    app.router.add_get("/healthz", _healthz)
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(create_app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from bench.limits import raise_nofile

    raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.port))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(args.port))


if __name__ == "__main__":
    main()
