"""`vitals watch`: a terminal dashboard on the gateway's dashboard stream.

`state` keeps the open alerts (sans-I/O), `render` draws them with rich, `client`
connects, reconnects and acknowledges. The client only talks to the gateway over
HTTP/WebSocket: it never imports the gateway's internals.
"""

from __future__ import annotations

__all__: list[str] = []
