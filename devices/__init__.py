"""The device side of vitals-gateway: a simulator of wearable vital-sign monitors.

It talks to the gateway only over the network (device stream protocol v1 and the admin
REST API) and never imports `gateway`; `schemas` is the contract both sides share.
Pure cores (`physiology`, `scenarios`, `outbox`, `backoff`) sit under thin I/O adapters
(`client` for one device's socket, `simulator` for many devices, `cli` for `vitals
simulate`).
"""

from __future__ import annotations

__all__: list[str] = []
