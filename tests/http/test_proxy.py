"""Behind a reverse proxy (gateway/http/proxy.py), on a real gateway over real sockets.

The test client connects from 127.0.0.1: with `trusted_proxies` holding 127.0.0.1/32 it
plays the proxy, and its `X-Forwarded-*` headers decide the client's address (audit
log, auth throttle, access line), scheme (Secure cookie) and host (Origin check). With
a list that does not hold it, or none, the same headers change nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from multidict import CIMultiDict

from gateway.errors import InvalidParameter
from gateway.http.auth import SESSION_COOKIE
from gateway.http.keys import AUTH_THROTTLE
from gateway.http.proxy import ClientView, client_view
from gateway.settings import Network
from tests.conftest import Gateway

CLIENT = "203.0.113.7"  # the browser, out on the internet (TEST-NET-3)
PUBLIC = "vitals.example.org"  # the name the proxy serves the gateway under
BROWSER_ORIGIN = f"https://{PUBLIC}"
THROUGH_PROXY = {
    "X-Forwarded-For": CLIENT,
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": PUBLIC,
}

behind_proxy = pytest.mark.parametrize(
    "settings_overrides",
    [{"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]}],
    ids=["trusted"],
)
not_behind_proxy = pytest.mark.parametrize(
    "settings_overrides",
    [{"trusted_proxies": []}, {"trusted_proxies": ["10.0.0.0/8"]}],
    ids=["no_proxies", "other_network"],
)


async def login(gateway: Gateway, headers: dict[str, str]) -> tuple[str, Any]:
    """Log the clinician in with `headers`: the session token and the cookie as set."""
    async with gateway.client.post(
        "/v1/session", json={"token": gateway.clinician_token}, headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        cookie = resp.cookies[SESSION_COOKIE]
    gateway.client.session.cookie_jar.clear()  # each test sends the cookie itself
    return cookie.value, cookie


async def audit_addresses(gateway: Gateway, action: str) -> list[str]:
    async with gateway.client.get(
        "/v1/audit", params={"action": action}, headers=gateway.auth(gateway.admin_token)
    ) as resp:
        assert resp.status == 200, await resp.text()
        return [e["address"] for e in (await resp.json())["items"]]


async def dashboard_status(gateway: Gateway, session: str, headers: dict[str, str]) -> int:
    """The dashboard stream's answer to an upgrade with the session cookie: 101 or the
    refusal's status."""
    all_headers = {"Cookie": f"{SESSION_COOKIE}={session}", **headers}
    try:
        async with gateway.client.ws_connect("/v1/dashboard/stream", headers=all_headers):
            return 101
    except WSServerHandshakeError as e:
        return e.status


async def unauthorized_from(gateway: Gateway, headers: dict[str, str]) -> None:
    async with gateway.client.get(
        "/v1/session", headers={"Authorization": "Bearer not-a-token", **headers}
    ) as resp:
        assert resp.status == 401


# --- from a trusted proxy ---------------------------------------------------------------


@behind_proxy
async def test_forwarded_for_is_the_address_in_the_audit_log(gateway: Gateway) -> None:
    """A login through the proxy is audited under the client's address, not the proxy's."""
    await login(gateway, {"X-Forwarded-For": CLIENT})

    assert await audit_addresses(gateway, "session.login") == [CLIENT]


@behind_proxy
async def test_forwarded_for_is_the_auth_throttles_key(gateway: Gateway) -> None:
    """A bad token through the proxy counts against the client's address: its next
    failure is delayed, while the proxy's own address has none on record."""
    await unauthorized_from(gateway, {"X-Forwarded-For": CLIENT})

    throttle = gateway.app[AUTH_THROTTLE]
    now = time.monotonic()
    assert throttle.fail(CLIENT, now) > 0  # a second failure: delayed
    assert throttle.fail("127.0.0.1", now) == 0  # a first one: free


@behind_proxy
async def test_forwarded_for_is_the_access_lines_address(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The access line names the client behind the proxy."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with gateway.client.get("/healthz", headers={"X-Forwarded-For": CLIENT}) as resp:
        assert resp.status == 200

    remotes = [getattr(r, "remote", None) for r in caplog.records if r.name == "gateway.access"]
    assert remotes == [CLIENT]


@behind_proxy
async def test_forwarded_https_makes_the_session_cookie_secure(gateway: Gateway) -> None:
    """A login over https at the proxy gets a Secure cookie, though the hop to the
    gateway is plain http."""
    _, cookie = await login(gateway, THROUGH_PROXY)

    assert cookie["secure"]
    assert cookie["httponly"]


@behind_proxy
async def test_the_browsers_https_origin_passes_the_origin_check(gateway: Gateway) -> None:
    """The dashboard page served by the proxy at https://vitals.example.org opens the
    stream with its session cookie: the gateway sees the origin as its own."""
    session, _ = await login(gateway, THROUGH_PROXY)

    browser = {"Origin": BROWSER_ORIGIN, **THROUGH_PROXY}
    assert await dashboard_status(gateway, session, browser) == 101
    elsewhere = {"Origin": "https://evil.example.com", **THROUGH_PROXY}
    assert await dashboard_status(gateway, session, elsewhere) == 403


@behind_proxy
async def test_a_spoofed_leftmost_address_is_ignored(gateway: Gateway) -> None:
    """The client's own X-Forwarded-For, passed on by the proxies, is left of the
    address they saw: the walk from the right stops there (10.0.0.0/8 is a proxy too)."""
    spoofed = {"X-Forwarded-For": f"198.51.100.1, {CLIENT}, 10.1.2.3"}
    await login(gateway, spoofed)

    assert await audit_addresses(gateway, "session.login") == [CLIENT]


@behind_proxy
async def test_every_address_a_trusted_proxy_leaves_the_leftmost_as_client(
    gateway: Gateway,
) -> None:
    """A request that only crossed proxies (a health check from inside) is from the
    leftmost of them."""
    await login(gateway, {"X-Forwarded-For": "10.0.0.5, 10.0.0.6"})

    assert await audit_addresses(gateway, "session.login") == ["10.0.0.5"]


@behind_proxy
@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Forwarded-For", "not-an-address"),
        ("X-Forwarded-For", f"{CLIENT}, "),
        ("X-Forwarded-For", f"{CLIENT}:4711"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-Forwarded-Host", "vitals.example.org/evil"),
        ("X-Forwarded-Host", 'a"b'),
    ],
)
async def test_a_malformed_forwarded_header_is_a_400_problem(
    gateway: Gateway, header: str, value: str
) -> None:
    """A header from a trusted proxy that cannot be read is answered 400 with the
    problem shape, naming the header; the request goes no further."""
    async with gateway.client.get("/healthz", headers={header: value}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
    assert body["error"] == "bad_request"
    assert body["param"] == header
    assert body["status"] == 400


# --- from a peer that is no trusted proxy -----------------------------------------------


@not_behind_proxy
async def test_an_untrusted_peers_forwarded_headers_change_nothing(gateway: Gateway) -> None:
    """From a peer outside `trusted_proxies` the same headers are ignored: the audit
    log and throttle see the peer, the cookie is not Secure over http, the browser's
    https origin is refused, and even malformed values are no error."""
    session, cookie = await login(gateway, THROUGH_PROXY)
    await unauthorized_from(gateway, THROUGH_PROXY)

    assert await audit_addresses(gateway, "session.login") == ["127.0.0.1"]
    assert not cookie["secure"]
    assert gateway.app[AUTH_THROTTLE].fail("127.0.0.1", time.monotonic()) > 0
    assert gateway.app[AUTH_THROTTLE].fail(CLIENT, time.monotonic()) == 0
    headers = {"Origin": BROWSER_ORIGIN, **THROUGH_PROXY}
    assert await dashboard_status(gateway, session, headers) == 403
    garbage = {"X-Forwarded-For": "nonsense", "X-Forwarded-Proto": "gopher"}
    async with gateway.client.get("/healthz", headers=garbage) as resp:
        assert resp.status == 200


# --- the rules, without a socket --------------------------------------------------------


def networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def test_an_ipv4_peer_on_a_dual_stack_socket_is_trusted_by_its_ipv4_network() -> None:
    """`::ffff:10.0.0.2` (how an IPv6 socket shows an IPv4 peer) is in 10.0.0.0/8."""
    headers = CIMultiDict({"X-Forwarded-For": CLIENT})

    view = client_view("::ffff:10.0.0.2", headers, networks("10.0.0.0/8"))

    assert view == ClientView(CLIENT)


def test_header_lines_are_joined_and_the_last_proto_and_host_win() -> None:
    """Several lines of one header are one list; the proxy's own (last) scheme and host
    are taken over whatever the client put before them."""
    headers = CIMultiDict(
        [
            ("X-Forwarded-For", f"198.51.100.1, {CLIENT}"),
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Proto", "HTTPS"),
            ("X-Forwarded-Host", f"evil.example.com, {PUBLIC}"),
        ]
    )

    view = client_view("127.0.0.1", headers, networks("127.0.0.1/32", "10.0.0.0/8"))

    assert view == ClientView(CLIENT, "https", PUBLIC)


def test_no_forwarded_headers_leave_the_peer_as_client() -> None:
    """A trusted peer without the headers (a health check) is itself the client."""
    view = client_view("10.0.0.2", CIMultiDict(), networks("10.0.0.0/8"))

    assert view == ClientView("10.0.0.2")


def test_an_untrusted_peer_gets_no_view_and_no_error() -> None:
    """From outside the trusted networks nothing is read, so nothing can be malformed."""
    headers = CIMultiDict({"X-Forwarded-For": "nonsense", "X-Forwarded-Host": "a b"})

    assert client_view("192.0.2.1", headers, networks("10.0.0.0/8")) is None
    assert client_view(None, headers, networks("10.0.0.0/8")) is None


def test_left_of_the_client_nothing_is_read() -> None:
    """Garbage the client wrote left of its real address is never parsed."""
    headers = CIMultiDict({"X-Forwarded-For": f"whatever, {CLIENT}, 10.0.0.3"})

    view = client_view("10.0.0.2", headers, networks("10.0.0.0/8"))

    assert view == ClientView(CLIENT)


def test_a_malformed_entry_a_proxy_vouches_for_names_the_header() -> None:
    """An unreadable entry right of the client raises InvalidParameter for the header."""
    headers = CIMultiDict({"X-Forwarded-For": f"{CLIENT}, not-an-address"})

    with pytest.raises(InvalidParameter) as caught:
        client_view("10.0.0.2", headers, networks("10.0.0.0/8"))
    assert caught.value.param == "X-Forwarded-For"
