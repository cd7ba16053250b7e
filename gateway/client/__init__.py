"""What the client commands (`vitals query`, `alerts`, `watch`, `demo`) share: TLS, output
to a terminal or a pipe, the gateway's error answers, and a gateway run as a child
process (`process`). Clients talk to a gateway only over HTTP and WebSocket."""
