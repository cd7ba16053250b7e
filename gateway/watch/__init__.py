"""`vitals watch`: a terminal dashboard on the gateway's dashboard stream.

`state` keeps the open alerts (sans-I/O), `render` draws them with rich, `client`
connects, reconnects and acknowledges. It talks to the gateway only over
HTTP/WebSocket: it imports `schemas` and the client helpers (`gateway.client`), never
the server side (an import contract in pyproject keeps it so).
"""

from __future__ import annotations

__all__: list[str] = []
