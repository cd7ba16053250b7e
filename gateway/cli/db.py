"""`vitals db upgrade` and `vitals db current`: the schema of the configured database.

`vitals serve` applies pending migrations itself unless `auto_migrate` is off; these
commands are for operators who migrate on purpose (and for checking before a rollout).
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import add_config_options, run, settings_from
from gateway.errors import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    db = sub.add_parser("db", help="the database schema: upgrade it, show its revision")
    dsub = db.add_subparsers(dest="action", required=True, metavar="ACTION")

    up = dsub.add_parser(
        "upgrade", help="apply pending schema migrations (creates the database if missing)"
    )
    add_config_options(up)
    up.set_defaults(func=_upgrade)

    cur = dsub.add_parser(
        "current", help="print the database's schema revision; exit 1 when it is not the head"
    )
    add_config_options(cur)
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    # Imported here: every `vitals` command builds this parser; only these need SQLAlchemy.
    from gateway.storage.database import upgrade_database

    settings = settings_from(args)
    before, after = run(upgrade_database(settings))
    if before.current == after.current:
        print(f"at {after.current} (head): nothing to do")
    else:
        print(f"upgraded from {before.describe()} to {after.current} (head)")
    return 0


def _current(args: argparse.Namespace) -> int:
    from gateway.storage.database import DatabaseMissing, database_revisions

    settings = settings_from(args)
    try:
        revisions = run(database_revisions(settings))
    except DatabaseMissing as e:
        raise ConfigError(f"{e}; pass --database-url or --config") from None
    if revisions.at_head:
        print(f"{revisions.current} (head)")
        return 0
    if not revisions.known:
        print(f"{revisions.current}: unknown to this version, whose head is {revisions.head}")
    else:
        print(f"{revisions.describe()}: behind the head {revisions.head}; run vitals db upgrade")
    return 1
