"""Alembic's environment: migrations run on the connection `storage/migrate.py` puts in
`config.attributes["connection"]`, inside that caller's transaction and lock."""

from __future__ import annotations

from alembic import context

from gateway.storage.schema import Base, include_name

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the gateway's migrations run through `vitals db upgrade` (storage/migrate.py),"
        " which hands them a connection"
    )
context.configure(
    connection=connection,
    # For autogenerate: what the models say the schema is.
    target_metadata=Base.metadata,
    # Readings' day partitions (PostgreSQL) are no models: never drop them.
    include_name=include_name,
    # SQLite alters a table by copying it: later revisions' ALTERs work on both backends.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
