"""The clinician web dashboard: static page, its security headers, and `GET /v1/rules`.

The page itself (plain ES modules under `static/`) talks only to the public API and
the dashboard stream; nothing here knows about the page's internals.
"""

from __future__ import annotations

from gateway.web.routes import routes

__all__ = ["routes"]
