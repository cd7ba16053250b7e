"""Persistence: `database.open_storage(settings)` opens a `Storage` on the configured
database, the one place that tells SQLite from PostgreSQL.

Tables in `schema.py`, their history in `migrations/` (run by `migrate.py`, the one
way the schema is made or changed); the backends' differences in `sqlite.py` (with its writer
thread, `sqlite_thread.py`) and `postgres.py`; the write side of readings in
`readings.py` and of alert events in `events.py`; reads and the other stores in
`alerts.py`, `queries.py`, `accounts.py` and `audit.py`.
"""
