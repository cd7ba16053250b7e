"""`vitals db upgrade`, `vitals db current`, and `vitals serve` with auto_migrate off, as
real processes on real SQLite files: what an operator sees and the exit statuses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from sqlalchemy import create_engine

from gateway.storage.migrate import head_revision
from gateway.storage.migrations.versions.v0001_first_schema import SCHEMA
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def vitals(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=ROOT,
    )  # fmt: skip


def db_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def made_before_migrations(path: Path) -> None:
    """Today's tables as the gateway made them before migrations: no `alembic_version`."""
    with closing(sqlite3.connect(path)) as conn:
        SCHEMA.create_all(create_engine("sqlite://", creator=lambda: conn))


def test_db_current_on_a_missing_database_names_it_and_creates_nothing(tmp_path: Path) -> None:
    """`db current` where there is no database names the file and URL, exits 2, and
    leaves no file or folder behind."""
    missing = tmp_path / "var" / "vitals.db"

    current = vitals("db", "current", "--database-url", db_url(missing))

    assert current.returncode == 2
    assert current.stderr == (
        f"vitals db current: no database at {missing} (database_url {db_url(missing)});"
        " pass --database-url or --config\n"
    )
    assert not (tmp_path / "var").exists()


def test_db_upgrade_creates_the_database_and_says_from_and_to(tmp_path: Path) -> None:
    """`db upgrade` on a new file prints `upgraded from none (empty) to HEAD (head)`; run
    again it has nothing to do; `db current` then prints the head and exits 0."""
    url = db_url(tmp_path / "vitals.db")
    head = head_revision()

    first = vitals("db", "upgrade", "--database-url", url)
    second = vitals("db", "upgrade", "--database-url", url)
    current = vitals("db", "current", "--database-url", url)

    assert (first.returncode, first.stdout) == (0, f"upgraded from none (empty) to {head} (head)\n")
    assert (second.returncode, second.stdout) == (0, f"at {head} (head): nothing to do\n")
    assert (current.returncode, current.stdout, current.stderr) == (0, f"{head} (head)\n", "")


def test_a_database_made_before_migrations_is_behind_until_upgraded(tmp_path: Path) -> None:
    """On a database made before migrations `db current` says so and exits 1 (a script
    can test it); `db upgrade` adopts it, through --config like every database command."""
    path = tmp_path / "old.db"
    made_before_migrations(path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "{db_url(path)}"\n')
    head = head_revision()

    behind = vitals("db", "current", "--config", str(config))
    upgraded = vitals("db", "upgrade", "--config", str(config))
    current = vitals("db", "current", "--config", str(config))

    assert (behind.returncode, behind.stdout) == (
        1,
        f"none (made before migrations): behind the head {head}; run vitals db upgrade\n",
    )
    assert (upgraded.returncode, upgraded.stdout) == (
        0,
        f"upgraded from none (made before migrations) to {head} (head)\n",
    )
    assert (current.returncode, current.stdout) == (0, f"{head} (head)\n")


def test_serve_with_auto_migrate_off_refuses_an_old_database_in_one_line(tmp_path: Path) -> None:
    """`vitals serve` with auto_migrate = false on a database not at the head prints one
    line naming the command to run, exits 2, and leaves the database as it was."""
    path = tmp_path / "old.db"
    made_before_migrations(path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "{db_url(path)}"\nauto_migrate = false\n')

    served = vitals("serve", "--config", str(config), "--port", str(free_port()))

    assert served.returncode == 2
    assert served.stderr == (
        f"vitals serve: the database at {path} is at schema revision none (made before"
        f" migrations), this gateway needs {head_revision()} and auto_migrate is off:"
        f" run `vitals db upgrade --config {config}` first\n"
    )
    with closing(sqlite3.connect(path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" not in tables


def test_a_database_of_a_newer_version_is_named_and_left_alone(tmp_path: Path) -> None:
    """At a revision this version has no migration for, `db current` says so and exits
    1, and `db upgrade` refuses in one line naming the database and exits 2."""
    path = tmp_path / "new.db"
    made_before_migrations(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")
        conn.commit()
    head = head_revision()

    current = vitals("db", "current", "--database-url", db_url(path))
    upgraded = vitals("db", "upgrade", "--database-url", db_url(path))

    assert (current.returncode, current.stdout) == (
        1,
        f"9999: unknown to this version, whose head is {head}\n",
    )
    assert (upgraded.returncode, upgraded.stdout) == (2, "")
    assert upgraded.stderr == (
        f"vitals db upgrade: the database at {path} is at schema revision 9999, which this"
        f" gateway does not know (its newest is {head}): it was upgraded by a newer version"
        " of the gateway; run that version\n"
    )
