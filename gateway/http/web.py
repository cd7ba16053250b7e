"""Serving the web dashboard (`/`, `/static/…`) with the security headers of its pages.

Every page and static file is sent with the same security headers: a strict
Content-Security-Policy (no inline script or style), nosniff and no referrer.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
}
# Explicit, because nosniff makes browsers refuse a module script sent with the
# platform's guess (some mime.types files still say application/x-javascript).
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

routes = web.RouteTableDef()


def _file(path: Path, cache: str) -> web.FileResponse:
    headers = {
        **_SECURITY_HEADERS,
        "Content-Type": _CONTENT_TYPES[path.suffix],
        "Cache-Control": cache,
    }
    return web.FileResponse(path, headers=headers)


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    # no-store: the page is tiny, and a cached copy would outlive an upgrade or a logout.
    return _file(STATIC_DIR / "index.html", "no-store")


@routes.get("/static/{name:.+}")
async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = (STATIC_DIR / name).resolve()
    if (
        not path.is_relative_to(STATIC_DIR)
        or path.suffix not in _CONTENT_TYPES
        or not path.is_file()
    ):
        raise web.HTTPNotFound()
    # no-cache: revalidated (ETag/Last-Modified) on every load, so an upgrade shows at once.
    return _file(path, "no-cache")
