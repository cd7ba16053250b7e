"""Logging set-up: readable text by default, JSON lines (`--log-format json`) for log
shippers. Both stamp records with ISO 8601 UTC time (`2026-12-05T15:39:38.395Z`), so
lines from gateways in different time zones sort and join as they are.

While a request is handled its id (`current_request_id`, set by the access middleware in
gateway/http/observe.py) is added to every record, as the `request_id` key in JSON and in
brackets after the logger name in text. Connection lines carry `extra` fields (device,
duration, reason) that JSON output keeps as keys.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["RequestIdFilter", "configure_logging", "current_request_id", "log_handler", "utc_time"]

# The id of the HTTP request being handled by the current task (and the tasks it
# starts, which copy the context); None outside any request.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def utc_time(record: logging.LogRecord) -> str:
    """`record.created` as ISO 8601 UTC with milliseconds and `Z`."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records emitted while a request is handled.

    A handler filter, not a logger filter: it sees records from every logger, ours,
    aiohttp's and SQLAlchemy's alike. Records outside a request get no such attribute.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class _TextFormatter(logging.Formatter):
    """`<time> <level> <logger> [<request id>]: <message>`, the id only within a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Built here rather than stored on the record: other handlers see it unchanged.
        request_id = getattr(record, "request_id", None)
        name = f"{record.name} [{request_id}]" if request_id else record.name
        return f"{record.asctime} {record.levelname} {name}: {record.message}"


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record)


def log_handler(fmt: Literal["text", "json"], stream: TextIO = sys.stderr) -> logging.Handler:
    """A stream handler in `fmt`, with the request id filter."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            _JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(fmt)]
    root.setLevel(level)
    # SQL and socket internals are noise at INFO; the gateway logs what matters.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    # Alembic names its context on every connection; storage/migrate.py logs upgrades.
    logging.getLogger("alembic").setLevel(logging.WARNING)
