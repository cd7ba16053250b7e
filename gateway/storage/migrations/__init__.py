"""The schema's history as Alembic migrations, run in code by `storage/migrate.py`
(no alembic.ini): `env.py` runs them on the connection it is handed, `versions/` holds
one module per revision, `script.py.mako` is the template of a new one."""
