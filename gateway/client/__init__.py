"""What the client commands (`vitals query`, `alerts`, `watch`) share: TLS, output to a
terminal or a pipe, and the gateway's error answers. Clients talk to a gateway only over
HTTP and WebSocket."""
