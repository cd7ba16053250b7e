"""Typed application state: every long-lived resource the handlers reach through `app`."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ingest.registry import DeviceRegistry
from gateway.ingest.writer import GroupCommitter
from gateway.settings import Settings
from gateway.storage.accounts import AccountStore

__all__ = ["ACCOUNTS", "COMMITTER", "DEVICES", "ENGINE", "SETTINGS"]

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
ACCOUNTS = web.AppKey("accounts", AccountStore)
COMMITTER = web.AppKey("committer", GroupCommitter)
DEVICES = web.AppKey("devices", DeviceRegistry)
