"""Logging set-up: readable text by default, JSON lines (`--log-format json`) for log
shippers. Connection lines carry `extra` fields (device, duration, reason) that JSON
output keeps as keys."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "log_handler"]

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_handler(fmt: Literal["text", "json"], stream: TextIO = sys.stderr) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    return handler


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(fmt)]
    root.setLevel(level)
    # SQL and socket internals are noise at INFO; the gateway logs what matters.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
