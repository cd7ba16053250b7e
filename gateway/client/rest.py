"""What the commands that talk to a running gateway over HTTP share (`query`, `alerts`,
`report`).

The gateway's URL (flag, else host and port of --config), the token, one session whose
connection failures become a `Failed` naming the URL, and the gateway's error bodies
turned into a message and an exit code: 1 unreachable or failing, 2 bad request,
3 missing, unknown or insufficient token.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError

from gateway.client.tls import client_tls
from gateway.settings import load_settings
from schemas.api import ErrorBody

__all__ = [
    "DEFAULT_URL",
    "EXIT_AUTH",
    "EXIT_BAD_REQUEST",
    "EXIT_FAILED",
    "TOKEN_ENV",
    "Failed",
    "base_url",
    "checked",
    "gateway_session",
    "get_model",
    "token_of",
]

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_ENV = "VITALS_TOKEN"

EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2
EXIT_AUTH = 3

_ERROR = TypeAdapter(ErrorBody)
T = TypeVar("T")
# A hanging gateway must not hang the CLI; a big CSV export may take long overall.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


class Failed(Exception):
    """The command cannot go on: `message` for stderr, `code` for the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def base_url(args: argparse.Namespace) -> str:
    """--url, else the host and port of --config (its loopback for any-address), else
    the default."""
    if args.url:
        return str(args.url).rstrip("/")
    if args.config is None:
        return DEFAULT_URL
    settings = load_settings(args.config)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def token_of(args: argparse.Namespace) -> str:
    """--token, else $VITALS_TOKEN; Failed (exit 3) before any request when neither."""
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise Failed(f"no token: pass --token or set {TOKEN_ENV}", EXIT_AUTH)
    return str(token)


@asynccontextmanager
async def gateway_session(
    base: str, token: str, cafile: str | None
) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends `token`; a gateway that cannot be reached is a Failed."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        tls = client_tls(cafile)
        async with aiohttp.ClientSession(
            headers=headers, timeout=_TIMEOUT, connector=aiohttp.TCPConnector(ssl=tls)
        ) as http:
            yield http
    except aiohttp.InvalidURL as e:
        raise Failed(f"not a usable --url: {e}", EXIT_BAD_REQUEST) from e
    except aiohttp.ClientPayloadError as e:
        raise Failed(f"the gateway's answer was cut short: {e}", EXIT_FAILED) from e
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        reason = str(e) or type(e).__name__
        raise Failed(f"cannot reach the gateway at {base}: {reason}", EXIT_FAILED) from e


async def checked(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """The response if it succeeded; Failed with the gateway's own words otherwise."""
    if response.status < 400:
        return response
    body = await response.read()
    try:
        error = _ERROR.validate_json(body)
        message = error.detail if error.param is None else f"{error.param}: {error.detail}"
    except ValidationError:
        message = body.decode(errors="replace")[:200] or response.reason or "no detail"
    match response.status:
        case 400:
            code = EXIT_BAD_REQUEST
        case 401 | 403:
            code = EXIT_AUTH
        case _:
            code = EXIT_FAILED
    raise Failed(f"gateway answered {response.status}: {message}", code)


async def get_model(
    http: aiohttp.ClientSession, url: str, params: Mapping[str, str], adapter: TypeAdapter[T]
) -> T:
    """GET `url` and validate its JSON body with `adapter`; Failed as `checked` says."""
    async with http.get(url, params=params) as response:
        return adapter.validate_json(await (await checked(response)).read())
