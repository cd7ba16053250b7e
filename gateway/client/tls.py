"""TLS for client commands."""

from __future__ import annotations

import ssl

__all__ = ["client_tls"]


def client_tls(cafile: str | None) -> ssl.SSLContext | bool:
    """TLS for client commands: the system's CAs, or only those in `cafile`."""
    return ssl.create_default_context(cafile=cafile) if cafile else True
