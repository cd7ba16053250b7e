"""The gateway's routing table, as tests that must cover every route see it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Gateway


def routes_of(gateway: Gateway) -> set[tuple[str, str]]:
    """(method, path template) of every route, HEAD aside (aiohttp adds it to each GET)."""
    found = set()
    for route in gateway.app.router.routes():
        assert route.resource is not None
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str), info
        if route.method != "HEAD":
            found.add((route.method, path))
    return found
