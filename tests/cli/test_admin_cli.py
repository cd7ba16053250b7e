"""`vitals devices …` as real processes on a real SQLite file: what a user piping or
mistyping sees (whole values when piped, a quiet exit when the reader leaves, a missing
database named instead of created)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from gateway.storage.accounts import AccountStore
from gateway.storage.database import open_engine, upgrade_schema

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30
# Longer than rich fits in 80 columns beside five other columns.
DEVICE_ID = "acc-cli-0a446085f0-wrist-left-2026"
PATIENT_ID = "p-icu-bed-0017-mrn-000123456789"


def env() -> dict[str, str]:
    """The environment of a user with no VITALS_* settings, piping into an 80-column tool."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    for forcing in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        clean.pop(forcing, None)
    return {**clean, "COLUMNS": "80"}


def vitals(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env(), cwd=cwd,
    )  # fmt: skip


def db_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def test_piped_devices_list_prints_whole_values_one_row_per_line(tmp_path: Path) -> None:
    """Piped, `devices list` is a header and one tab-separated line per device, every id
    whole, so `grep ID` finds the device's line and `cut -f1` its id."""
    url = db_url(tmp_path / "vitals.db")
    added = vitals("devices", "add", DEVICE_ID, "--patient", PATIENT_ID, "--ward", "icu",
                   "--database-url", url)  # fmt: skip
    assert added.returncode == 0, added.stderr

    listed = vitals("devices", "list", "--database-url", url)

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["device", "patient", "ward", "created", "status", "last seq"]
    assert [row.split("\t")[:3] for row in rows] == [[DEVICE_ID, PATIENT_ID, "icu"]]
    assert "…" not in listed.stdout


def test_devices_list_json_is_one_object_per_device(tmp_path: Path) -> None:
    """`devices list --json` prints each device as one JSON object on its own line."""
    url = db_url(tmp_path / "vitals.db")
    for n in (1, 2):
        vitals("devices", "add", f"{DEVICE_ID}-{n}", "--patient", PATIENT_ID, "--ward", "icu",
               "--database-url", url)  # fmt: skip

    listed = vitals("devices", "list", "--json", "--database-url", url)

    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in records] == [f"{DEVICE_ID}-1", f"{DEVICE_ID}-2"]
    assert set(records[0]) == {"id", "patient_id", "ward", "created_at", "revoked_at", "last_seq"}


async def _provision_many(path: Path, n: int) -> None:
    engine = open_engine(db_url(path), sqlite_synchronous="OFF")
    try:
        await upgrade_schema(engine)
        store = AccountStore(engine)
        for i in range(n):
            await store.add_device(f"{DEVICE_ID}-{i:05d}", PATIENT_ID, "icu")
    finally:
        await engine.dispose()


def test_reader_closing_the_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    """`vitals devices list --json | head -1`: the reader leaves after one line, while
    the command still has far more than a pipe holds to write; it exits 0 with nothing
    on stderr (no BrokenPipeError traceback, no "Exception ignored")."""
    path = tmp_path / "vitals.db"
    asyncio.run(_provision_many(path, 1500))  # some 300 kB of JSON lines: > a pipe's buffer
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "devices", "list", "--json",
         "--database-url", db_url(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does once it has its line
        try:
            code = proc.wait(timeout=TIMEOUT_S)  # stderr is a few lines at most
        except subprocess.TimeoutExpired:
            proc.kill()  # the defect: it would run on for ever
            raise
        err = proc.stderr.read()

    assert json.loads(first)["id"] == f"{DEVICE_ID}-00000"
    assert (code, err.decode()) == (0, "")


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    """`devices list` and `devices revoke` on a database that is not there name it (file
    and URL) and how to choose another, exit 2, and leave no file or folder behind."""
    missing = tmp_path / "var" / "vitals.db"
    url = db_url(missing)

    listed = vitals("devices", "list", "--database-url", url)
    revoked = vitals("devices", "revoke", DEVICE_ID, "--database-url", url)

    for run, command in ((listed, "devices list"), (revoked, "devices revoke")):
        assert run.returncode == 2
        assert run.stdout == ""
        assert run.stderr == (
            f"vitals {command}: no database at {missing} (database_url {url}); pass "
            "--database-url or --config, or run vitals serve first\n"
        )
    assert not missing.parent.exists()


def test_default_database_is_named_when_missing(tmp_path: Path) -> None:
    """With no flag, `devices list` in a fresh directory names the shipped default,
    ./var/vitals.db, instead of creating it there."""
    run = vitals("devices", "list", cwd=tmp_path)

    assert run.returncode == 2
    assert "no database at ./var/vitals.db" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_database_without_tables_is_no_database(tmp_path: Path) -> None:
    """An empty SQLite file (not the gateway's) is refused the same way, not listed as empty."""
    path = tmp_path / "empty.db"
    path.touch()

    run = vitals("devices", "list", "--database-url", db_url(path))

    assert run.returncode == 2
    assert f"no database at {path}" in run.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_adding_a_device_still_creates_the_database(tmp_path: Path) -> None:
    """`devices add` is how a database is first made: it creates the file and folder."""
    path = tmp_path / "new" / "vitals.db"

    run = vitals("devices", "add", DEVICE_ID, "--patient", PATIENT_ID, "--ward", "icu",
                 "--database-url", db_url(path))  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert path.is_file()


def test_version_comes_from_the_package_metadata() -> None:
    """`vitals --version` prints the installed distribution's version."""
    run = vitals("--version")

    assert (run.returncode, run.stdout) == (0, f"vitals {version('vitals-gateway')}\n")
