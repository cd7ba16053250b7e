"""Persistence: table models, the engine (the one place that knows SQLite from
PostgreSQL), and the stores that the rest of the gateway calls."""
