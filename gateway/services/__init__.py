"""The long-lived stateful parts a gateway process runs: the group committer, the device
registry and ordered replies, the alerting service, the vitals publisher, the dashboard
fan-out hub, metrics and WebSocket frame sending. They own state and I/O; the decisions
they act on come from `gateway.core`."""
