"""How every `vitals` command prints tables and records, the same way everywhere.

On a terminal a table is drawn by rich, fitted to the window. Anywhere else (a pipe, a
file) it is printed as tab-separated lines, header first, every value whole: like
`gh`, so `grep`, `cut -f` and `awk -F'\\t'` see each row on one line. `--json` prints
one JSON object per line instead, the format for scripts.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TextIO

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "add_json_option",
    "console_for",
    "print_json_lines",
    "print_table",
    "show",
    "table_lines",
]

# A value keeps one row on one line: these would split it.
_SEPARATORS = str.maketrans({"\t": " ", "\n": " ", "\r": " "})

Record = BaseModel | Mapping[str, Any]


def add_json_option(parser: argparse.ArgumentParser, what: str = "object") -> None:
    """`--json`, the one flag for machine-readable output on every listing command."""
    parser.add_argument(
        "--json", action="store_true", help=f"one JSON {what} per line instead of a table"
    )


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would point stdout at /dev/null and exit 1; a reader that has seen enough
        # is no failure, and `vitals`'s main ends every command on it the same way.
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def console_for(file: TextIO | None = None) -> Console:
    """A console on `file` (default stdout); off a terminal it never wraps long lines,
    and a closed pipe raises BrokenPipeError (rich itself would exit 1)."""
    console = _Console(file=file if file is not None else sys.stdout)
    if not console.is_terminal:
        console.soft_wrap = True
    return console


def print_table(table: Table, console: Console | None = None) -> None:
    """`table` drawn by rich on a terminal; whole values, tab-separated, anywhere else.

    The title is left out of the tab-separated form: it would be a line that is no row.
    """
    console = console or console_for()
    if console.is_terminal:
        console.print(table)
        return
    console.file.write("".join(line + "\n" for line in table_lines(table)))
    console.file.flush()


def table_lines(table: Table) -> list[str]:
    """The header and each row of `table` as tab-separated plain text."""
    columns = [[_plain(c.header), *(_plain(cell) for cell in c.cells)] for c in table.columns]
    rows = zip(*columns, strict=True) if columns else iter(())
    lines = ["\t".join(row) for row in rows]
    return lines if table.show_header else lines[1:]


def _plain(cell: object) -> str:
    # Cells are our data, not rich markup: a `[` in a value is printed as it is.
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return text.translate(_SEPARATORS)


def print_json_lines(records: Iterable[Record], file: TextIO | None = None) -> None:
    """Each record as one compact JSON object on its own line."""
    out = file if file is not None else sys.stdout
    for record in records:
        if isinstance(record, BaseModel):
            out.write(record.model_dump_json() + "\n")
        else:
            out.write(json.dumps(record, default=_jsonable, separators=(",", ":")) + "\n")
    out.flush()


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def show(table: Table, records: Iterable[Record], *, json: bool) -> None:
    """What a listing command prints: `records` as JSON lines with `--json`, else `table`."""
    if json:
        print_json_lines(records)
    else:
        print_table(table)
