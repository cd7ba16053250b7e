"""Clinician dashboards: the fan-out hub (`hub`), the vitals throttle (`vitals`,
sans-I/O), and the `/v1/dashboard/stream` WebSocket handler (`stream`)."""
