"""Behind a reverse proxy: the client's address, scheme and host, from `X-Forwarded-For`,
`X-Forwarded-Proto` and `X-Forwarded-Host`, believed only when the connection comes
from one of the `trusted_proxies` networks.

`forwarded_middleware` is the outermost middleware: it hands the rest of the chain
`request.clone(remote=…, scheme=…, host=…)`, so the access line and request id
(observe.py), auth throttling (problems.py), the audit log, the session cookie's Secure
flag (session.py) and the Origin check (auth.py) all see the client's view.

The rules (`client_view`, a pure function):
- A peer outside `trusted_proxies` is the client; its `X-Forwarded-*` headers are
  ignored, whatever they say.
- `X-Forwarded-For` (every header line, joined in order) is walked from the right:
  addresses of trusted proxies are skipped, the first untrusted one is the client.
  Whatever lies left of it is what the client sent itself and is never read, so a
  client cannot pose as another address by sending the header through the proxy. When
  every address is trusted, the leftmost is the client.
- `X-Forwarded-Proto` and `X-Forwarded-Host`: the last value, the one the proxy we talk
  to set (configure it to set the header, not to pass on the client's).
- A header the trusted proxy vouches for that cannot be read (not an IP address, a
  scheme other than http/https, a host that is no `host[:port]`) is a misconfigured
  proxy: 400 with the problem shape (`InvalidParameter` naming the header, answered by
  the one table), and a warning in the log. This middleware runs before observe's and
  the error middleware, so it answers that itself.

Why not aiohttp-remotes: its `XForwardedStrict` takes one set of addresses per hop and
refuses (400) a request with more or fewer hops than configured, so also a direct
request from a peer that is no proxy (a health check, an operator on the box); it takes
the leftmost `X-Forwarded-Proto`, which is the one a client can write; and it answers
in plain text, not with our problems. The rules above are a few dozen lines.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from multidict import MultiMapping

from gateway.errors import InvalidParameter
from gateway.http.problems import problem_response
from gateway.settings import Network

__all__ = ["ClientView", "client_view", "forwarded_middleware"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https"})
# A Host header's value: a DNS name or IPv4 address, or an IPv6 literal in brackets,
# and an optional port. Nothing that could break a log line or an Origin comparison.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class ClientView:
    """The client as a trusted proxy describes it; None fields: as the connection has it."""

    remote: str
    scheme: str | None = None
    host: str | None = None


def _trusted(address: Address, trusted: Iterable[Network]) -> bool:
    # A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d; IPv4 networks mean it too.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def _values(headers: MultiMapping[str], name: str) -> list[str]:
    """A list header's items over all its lines, in order (RFC 9110 §5.3)."""
    return [item.strip() for line in headers.getall(name, ()) for item in line.split(",")]


def _client_address(headers: MultiMapping[str], peer: str, trusted: tuple[Network, ...]) -> str:
    client = peer
    for entry in reversed(_values(headers, hdrs.X_FORWARDED_FOR)):
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            raise InvalidParameter(
                hdrs.X_FORWARDED_FOR, f"{entry!r} from a trusted proxy is not an IP address"
            ) from None
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client


def _last(headers: MultiMapping[str], name: str) -> str | None:
    values = _values(headers, name)
    return values[-1] if values else None


def client_view(
    peer: str | None, headers: MultiMapping[str], trusted: tuple[Network, ...]
) -> ClientView | None:
    """The client behind the proxy `peer`, or None when `peer` is no trusted proxy (the
    request is taken as it came). InvalidParameter when a header cannot be read."""
    if peer is None:  # not an IP socket
        return None
    try:
        if not _trusted(ipaddress.ip_address(peer), trusted):
            return None
    except ValueError:
        return None
    scheme = _last(headers, hdrs.X_FORWARDED_PROTO)
    if scheme is not None:
        scheme = scheme.lower()
        if scheme not in _SCHEMES:
            raise InvalidParameter(hdrs.X_FORWARDED_PROTO, f"{scheme!r} is not http or https")
    host = _last(headers, hdrs.X_FORWARDED_HOST)
    if host is not None and not _HOST.fullmatch(host):
        raise InvalidParameter(hdrs.X_FORWARDED_HOST, f"{host!r} is not a host[:port]")
    return ClientView(_client_address(headers, peer, trusted), scheme, host)


def forwarded_middleware(trusted: Iterable[Network]) -> Middleware:
    """The outermost middleware: the request as the client behind `trusted` proxies
    made it (see the module docstring)."""
    networks = tuple(trusted)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            view = client_view(request.remote, request.headers, networks)
        except InvalidParameter as e:
            log.warning("refused a request through proxy %s: %s", request.remote, e)
            return problem_response(e)
        if view is None:
            return await handler(request)
        return await handler(
            request.clone(
                remote=view.remote,
                scheme=view.scheme or request.scheme,
                host=view.host or request.host,
            )
        )

    return forwarded
