"""Shared fixtures: a real gateway app on a real SQLite file, and real tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.http.keys import ACCOUNTS
from gateway.settings import Settings, load_settings
from gateway.storage.accounts import Role


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test changes: parametrize this fixture to change them."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    """Shipped defaults, with a fresh database file, a short revocation check, and the
    test's `settings_overrides`."""
    return load_settings(
        **{
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}",
            "revocation_check_s": 0.5,
            "commit_delay_ms": 1.0,
            **settings_overrides,
        }
    )


@dataclass
class Gateway:
    """A running gateway app, its test client, and tokens provisioned in its database."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    admin_token: str
    clinician_token: str

    async def add_device(self, device_id: str, patient_id: str, ward: str = "icu") -> str:
        _, token = await self.app[ACCOUNTS].add_device(device_id, patient_id, ward)
        return token

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def gateway(aiohttp_client: AiohttpClient, settings: Settings) -> Gateway:
    app = create_app(settings)
    client = await aiohttp_client(app)
    admin = await app[ACCOUNTS].add_user("root", Role.ADMIN)
    clinician = await app[ACCOUNTS].add_user("dr-lee", Role.CLINICIAN, wards=["icu"])
    return Gateway(app, client, admin, clinician)
