"""Serving the dashboard page: security headers, static files, and `GET /v1/rules`
(in-process app, no browser)."""

from __future__ import annotations

import pytest

from gateway.http.web import CONTENT_SECURITY_POLICY
from tests.conftest import Gateway


async def test_index_is_served_with_strict_security_headers(gateway: Gateway) -> None:
    """`/` is the page, with a CSP that allows no inline script or style, and no-store."""
    r = await gateway.client.get("/")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    text = await r.text()
    assert '<script type="module" src="/static/app.js"></script>' in text
    assert "style=" not in text  # inline style attributes would break the CSP


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/stream.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/icon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_have_exact_types_and_headers(
    gateway: Gateway, path: str, content_type: str
) -> None:
    """Modules are sent as JavaScript (nosniff makes browsers insist), with the same headers."""
    r = await gateway.client.get(path)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith(content_type)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/../routes.py",
        "/static/%2e%2e/routes.py",
        "/static/..%2f__init__.py",
        "/static/",
    ],
)
async def test_static_serves_nothing_outside_its_folder(gateway: Gateway, path: str) -> None:
    """Unknown names and escapes from the static folder are 404s, never source files."""
    r = await gateway.client.get(path)
    assert r.status == 404


async def test_rules_need_a_user(gateway: Gateway) -> None:
    """`/v1/rules` answers 401 without credentials and 403 to a device."""
    assert (await gateway.client.get("/v1/rules")).status == 401
    device = await gateway.add_device("w-1", "p-1")
    assert (await gateway.client.get("/v1/rules", headers=gateway.auth(device))).status == 403


async def test_rules_list_the_rules_in_force(gateway: Gateway) -> None:
    """Every rule of the rules file, with what the page needs to draw and word it, and the
    longest silence the page may offer."""
    r = await gateway.client.get("/v1/rules", headers=gateway.auth(gateway.clinician_token))
    assert r.status == 200
    body = await r.json()
    assert body["max_silence_s"] == 120.0  # the shipped default: what silence buttons offer
    rules = {rule["name"]: rule for rule in body["rules"]}
    assert rules["spo2-low"] == {
        "name": "spo2-low",
        "metric": "spo2",
        "direction": "below",
        "threshold": 92.0,
        "clear_margin": 1.0,
        "for_s": 10.0,
        "priority": "high",
        "label": "SpO₂ low",
        "escalate_after_s": 120.0,
        "kind": "threshold",
        "band_at_least": None,
        "disabled": False,
        "default": None,
        "override": None,
    }
    assert rules["heart_rate-high"]["direction"] == "above"
    # NEWS2 rules are listed too, without a metric: the page draws no line for them.
    assert (rules["news2-high"]["kind"], rules["news2-high"]["metric"]) == ("news2", None)
