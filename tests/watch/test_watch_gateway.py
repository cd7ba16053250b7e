"""`vitals watch` against a real gateway: a typed `s <id>` silences the alert there,
and a gateway whose `max_silence_s` is below the watcher's default refuses it in words
the watcher shows."""

from __future__ import annotations

import asyncio
import io
import json
import os
from typing import Any

import pytest

from gateway.watch.client import EXIT_OK, WatchOptions, watch
from tests.conftest import Gateway
from tests.support.alert_helpers import at, open_device
from tests.support.frames import reading

WAIT_S = 5.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_silence_s": 60.0}


async def test_typed_silence_reaches_the_gateway(
    gateway: Gateway, stdin_pipe: tuple[Any, int]
) -> None:
    """`s <id>` (120 s) is refused by a gateway allowing 60 s, naming max_silence_s;
    `s <id> 30` silences the alert for dr-lee, as the next event says."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", 80, at(0))])
    reader, writer = stdin_pipe
    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    url = str(gateway.client.make_url("/"))
    options = WatchOptions(url=url, token=gateway.clinician_token, json=True)
    task = asyncio.create_task(watch(options, stdout=out, stderr=err, stdin=reader, stop=stop))

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    async with asyncio.timeout(WAIT_S):
        while not events() or "subscribed" not in err.getvalue():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        alert_id = events()[0]["alert"]["id"]
        os.write(writer, f"s {alert_id}\n".encode())
        while "not silenced" not in err.getvalue():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        os.write(writer, f"s {alert_id} 30\n".encode())
        while "silenced by dr-lee until" not in err.getvalue():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        stop.set()
        assert await task == EXIT_OK

    assert f"alert {alert_id} not silenced: bad_message" in err.getvalue()
    assert "max_silence_s" in err.getvalue()
    silenced = events()[-1]["alert"]
    assert (silenced["id"], silenced["silenced_by"]) == (alert_id, "dr-lee")
    assert silenced["label"] == "Systolic BP low"
